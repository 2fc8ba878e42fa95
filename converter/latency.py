"""Latency measured honestly on a shared machine: alternated rounds, a fixed thread count,
the median with its spread.

The original and every candidate are timed in the same rounds, one after the other (A B C A B
C ...), so that load from other processes falls on all of them alike; each round's median is
kept and the figures are the median of the rounds and their spread (half the range between the
25th and 75th percentile of round medians, at least the rounds' own jitter). A candidate's lead
over another counts only when it exceeds both spreads together (:func:`significantly_faster`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
from edgeserve.converter.calibration import Dataset
from edgeserve.converter.validate import Runner

__all__ = ["LATENCY_ROUNDS", "first_batch", "measure_alternated", "significantly_faster"]

LATENCY_ROUNDS: Final = 5
ROUND_BUDGET_S: Final = 0.25  # seconds per model per round (or ROUND_RUNS, whichever first)
ROUND_RUNS: Final = (3, 40)  # timed runs per model per round: at least, at most
WARMUP_RUNS: Final = 3


def _feed(data: Dataset, batch: int) -> dict[str, np.ndarray]:
    feed = {}
    for name, array in data.items():
        reps = -(-batch // array.shape[0])
        feed[name] = np.concatenate([array] * reps)[:batch] if reps > 1 else array[:batch]
    return feed


def measure_alternated(
    runners: Sequence[tuple[Runner, Mapping[str, np.ndarray]]],
    rounds: int = LATENCY_ROUNDS,
) -> list[dict[str, float]]:
    """Time each runner on its feed in alternated rounds.

    Args:
        runners: (runner, one batch of inputs) per model, the original first.
        rounds: rounds of timing.

    Returns:
        Per runner: ``p50_ms`` (median of round medians), ``p95_ms`` (over every run),
        ``spread_ms``, ``runs`` and ``rounds``.
    """
    for runner, feed in runners:
        for _ in range(WARMUP_RUNS):
            runner(feed)
    medians: list[list[float]] = [[] for _ in runners]
    every: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, (runner, feed) in enumerate(runners):
            times: list[float] = []
            deadline = time.perf_counter() + ROUND_BUDGET_S
            while len(times) < ROUND_RUNS[1] and (
                len(times) < ROUND_RUNS[0] or time.perf_counter() < deadline
            ):
                start = time.perf_counter()
                runner(feed)
                times.append((time.perf_counter() - start) * 1000.0)
            medians[i].append(float(np.median(times)))
            every[i] += times
    results = []
    for round_medians, times in zip(medians, every, strict=True):
        q25, q75 = np.percentile(round_medians, [25, 75])
        jitter = float(np.percentile(times, 75) - np.percentile(times, 25)) / 2
        results.append(
            {
                "p50_ms": float(np.median(round_medians)),
                "p95_ms": float(np.percentile(times, 95)),
                "spread_ms": max(float(q75 - q25) / 2, jitter / np.sqrt(len(round_medians))),
                "runs": len(times),
                "rounds": len(round_medians),
            }
        )
    return results


def first_batch(data: Dataset, batch: int) -> dict[str, np.ndarray]:
    """The first ``batch`` rows of ``data`` (repeated when there are fewer)."""
    return _feed(data, batch)


def significantly_faster(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """True when ``a``'s median beats ``b``'s by more than their spreads together."""
    return b["p50_ms"] - a["p50_ms"] > a["spread_ms"] + b["spread_ms"]
