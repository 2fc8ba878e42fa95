"""What a conversion decides and reports: the fidelity settings from the options, the refusal
message, and the ``validation`` mapping the manifest stores."""

from __future__ import annotations

from typing import Any

import numpy as np
from edgeserve.converter.evaluate import Candidate, Fidelity
from edgeserve.converter.gate import DEFAULT_MAX_DROP_POINTS, Budget
from edgeserve.converter.loaders import SourceModel
from edgeserve.converter.tasks import TASKS, load_metric

from edgeserve.errors import ConfigError

__all__ = ["budget_text", "fidelity_from", "json_safe", "manifest_metrics", "refusal_message"]


def fidelity_from(
    task: str | None,
    metric_spec: str | None,
    labels: np.ndarray | None,
    max_drop: float | None,
    min_cosine: float,
    min_snr_db: float,
) -> Fidelity:
    """How candidates are judged, from ``--task``, ``--metric``, ``--labels`` and the budgets.

    Raises:
        ConfigError: an unknown task, labels for a task that has none, a metric that does not
            import, or ``--max-accuracy-drop`` with nothing to measure it on.
    """
    if task is None and labels is not None and metric_spec is None:
        task = "classify"  # labels are class ids: the classification task
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown --task {task!r} (known: {', '.join(TASKS)})")
    if labels is not None and task not in ("classify", None) and metric_spec is None:
        raise ConfigError(f"--labels are class ids for --task classify, not --task {task}")
    metric = load_metric(metric_spec) if metric_spec else None
    if max_drop is not None and task is None and metric is None:
        raise ConfigError(
            "--max-accuracy-drop is in points of a task metric: give --task, --metric or "
            "--labels (without one, --min-cosine/--min-snr-db bound every output)"
        )
    budget = Budget(
        max_drop_points=(DEFAULT_MAX_DROP_POINTS if max_drop is None else max_drop),
        min_cosine=min_cosine,
        min_snr_db=min_snr_db,
    )
    return Fidelity(task, labels, metric, metric_spec or "", budget)


def budget_text(fidelity: Fidelity) -> str:
    """The budget in the flags' own words, for messages."""
    b = fidelity.budget
    if fidelity.task is not None or fidelity.metric is not None:
        return f"--max-accuracy-drop {b.max_drop_points:g} points"
    return f"--min-cosine {b.min_cosine:g} and --min-snr-db {b.min_snr_db:g} on every output"


def refusal_message(candidate: Candidate, fidelity: Fidelity) -> str:
    """One line: who was refused, the figure, how to loosen, the most sensitive nodes."""
    hint = ""
    if candidate.sensitivity:
        nodes = ", ".join(e["node"] for e in candidate.sensitivity[:3])
        hint = f" (most sensitive nodes: {nodes}; try --exclude-nodes or --precision auto)"
    loosen = (
        "--max-accuracy-drop"
        if fidelity.task is not None or fidelity.metric is not None
        else "--min-cosine/--min-snr-db"
    )
    return (
        f"{candidate.name} refused: {candidate.failure}; no bundle written "
        f"(loosen with {loosen}){hint}"
    )


def manifest_metrics(
    chosen: Candidate,
    candidates: list[Candidate],
    failed: list[dict[str, Any]],
    fidelity: Fidelity,
    source: SourceModel,
    original_latency: dict[str, float],
    threads: int,
) -> dict[str, Any]:
    """The manifest's ``validation`` for the chosen candidate (``data``/``rows``/health check
    and wall time are added by the caller)."""
    outputs = chosen.outputs
    first = next(iter(outputs.values()))
    errs = [o["max_abs_err"] for o in outputs.values() if o["max_abs_err"] is not None]
    metrics: dict[str, Any] = {
        "outputs": outputs,
        "cosine": first["cosine"],
        "max_abs_err": max(errs) if errs else None,
        "budget": fidelity.budget.to_dict(),
        "threads": threads,
        "chosen": chosen.name,
    }
    original: dict[str, Any] = {"size_bytes": source.size_bytes, "latency_ms": original_latency}
    converted: dict[str, Any] = {"size_bytes": chosen.size_bytes, "latency_ms": chosen.latency}
    if chosen.task is not None:
        task = chosen.task.to_dict()
        metrics["task"] = task
        for key in ("top1_agreement", "top5_agreement", "accuracy_original", "accuracy_converted"):
            if key in task:
                metrics[key] = task[key]
        if "accuracy_original" in task:
            metrics["accuracy_drop_points"] = task["drop_points"]
            original["accuracy"] = task["accuracy_original"]
            converted["accuracy"] = task["accuracy_converted"]
    metrics["original"] = original
    metrics["converted"] = converted
    quantized = chosen.built.options.get("quantized_nodes")
    if quantized is not None:
        metrics["quantized_nodes"] = quantized
    if chosen.sensitivity or any(c.sensitivity for c in candidates):
        metrics["sensitivity"] = chosen.sensitivity or next(
            c.sensitivity for c in candidates if c.sensitivity
        )
    if len(candidates) + len(failed) > 1:
        metrics["candidates"] = [c.summary() for c in candidates]
    if failed:
        metrics["failed_candidates"] = failed
    return metrics


def json_safe(value: Any) -> Any:
    """Metrics as the manifest stores them: a NaN or infinite figure (e.g. the max abs error of
    a model whose outputs are NaN) becomes null, since JSON has neither."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
