"""The fidelity gate: per-output agreement figures, and the budget a bundle must stay within.

With a task (``--task``, ``--metric``, or ``--labels`` implying ``classify``) the gate is the
task score's drop in points against ``--max-accuracy-drop`` (default 1). Without one, every
output must keep cosine similarity >= ``--min-cosine`` (default 0.99) and signal-to-noise
ratio >= ``--min-snr-db`` (default 20 dB) against the original: 0.99 cosine is where a
probability map or box tensor visibly starts to move (an fp16 text detector at cosine 0.72 had
lost half its text area), and 20 dB is an error at a tenth of the signal's RMS. A figure that
is NaN or infinite (an fp16 overflow) fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from edgeserve.converter.tasks import TaskScore

__all__ = [
    "DEFAULT_MAX_DROP_POINTS",
    "DEFAULT_MIN_COSINE",
    "DEFAULT_MIN_SNR_DB",
    "Budget",
    "compare_outputs",
    "gate_failure",
]

DEFAULT_MAX_DROP_POINTS: Final = 1.0
DEFAULT_MIN_COSINE: Final = 0.99
DEFAULT_MIN_SNR_DB: Final = 20.0


@dataclass(frozen=True)
class Budget:
    """What a bundle may lose.

    Attributes:
        max_drop_points: task-metric points (``--max-accuracy-drop``).
        min_cosine: per-output cosine without a task (``--min-cosine``).
        min_snr_db: per-output SNR in dB without a task (``--min-snr-db``).
    """

    max_drop_points: float = DEFAULT_MAX_DROP_POINTS
    min_cosine: float = DEFAULT_MIN_COSINE
    min_snr_db: float = DEFAULT_MIN_SNR_DB

    def to_dict(self) -> dict[str, float]:
        """The manifest form."""
        return {
            "max_drop_points": self.max_drop_points,
            "min_cosine": self.min_cosine,
            "min_snr_db": self.min_snr_db,
        }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0 or not np.isfinite(denom):
        if not np.all(np.isfinite(b)):
            return float("nan")
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(a @ b / denom)


def _snr_db(a: np.ndarray, b: np.ndarray) -> float:
    noise = float(np.sum((a - b) ** 2))
    signal = float(np.sum(a**2))
    if not np.isfinite(noise):
        return float("nan")
    if noise == 0:
        return float("inf")
    return 10.0 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


def compare_outputs(
    names: Sequence[str], original: Sequence[np.ndarray], converted: Sequence[np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Output name -> ``cosine``, ``snr_db``, ``max_abs_err`` and ``nonfinite`` (the count of
    NaN/inf values the converted output has where the original is finite). Positions where
    the original is not finite are left out; an output with no finite value gets NaN figures
    (stored as null) and is not gated."""
    out: dict[str, dict[str, Any]] = {}
    for name, x, y in zip(names, original, converted, strict=True):
        if x.dtype.kind not in "fiu" or x.shape != y.shape:
            out[name] = {"cosine": None, "snr_db": None, "max_abs_err": None, "nonfinite": 0}
            continue
        a = x.astype(np.float64).ravel()
        b = y.astype(np.float64).ravel()
        # where the original itself is NaN/inf there is nothing to compare against
        finite = np.isfinite(a)
        nonfinite = int(np.sum(~np.isfinite(b) & finite))
        if not finite.any():
            nan = float("nan")
            out[name] = {"cosine": nan, "snr_db": nan, "max_abs_err": nan, "nonfinite": 0}
            continue
        a, b = a[finite], b[finite]
        err = np.abs(a - b)
        out[name] = {
            "cosine": _cosine(a, b),
            "snr_db": _snr_db(a, b),
            "max_abs_err": float(np.max(err)),
            "nonfinite": nonfinite,
        }
    return out


def gate_failure(
    outputs: dict[str, dict[str, Any]], task: TaskScore | None, budget: Budget
) -> str | None:
    """Why the candidate is refused, naming the output or the task figure; None if it passes."""
    if task is not None:
        drop = task.drop_points
        if not np.isfinite(drop) or drop > budget.max_drop_points:
            return (
                f"{task.task} {task.metric} {task.score:.4f} vs {task.reference:.4f} "
                f"(drop {drop:.2f} points > --max-accuracy-drop {budget.max_drop_points:g})"
            )
        return None
    for name, figures in outputs.items():
        cos, snr = figures["cosine"], figures["snr_db"]
        if cos is None or (figures["nonfinite"] == 0 and not np.isfinite(figures["max_abs_err"])):
            continue  # not comparable: not a number tensor, or the original has no finite value
        if figures["nonfinite"]:
            return f"output {name!r} has {figures['nonfinite']} NaN/inf values the original has not"
        if not cos >= budget.min_cosine:  # NaN fails
            return f"output {name!r} cosine {cos:.4f} < --min-cosine {budget.min_cosine:g}"
        if not snr >= budget.min_snr_db:
            return f"output {name!r} SNR {snr:.1f} dB < --min-snr-db {budget.min_snr_db:g}"
    return None
