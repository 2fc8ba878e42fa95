"""Evaluate candidates against the original and choose one: fidelity, the gate, latency.

A candidate is a built scratch bundle (:mod:`edgeserve.converter.build`) with its figures:
per-output agreement, the task score, why the gate refused it (or None), its size and, once
measured in alternated rounds with the original, its latency. :func:`choose` keeps the
fastest candidate the gate passes, preferring the family's fp32 member (or the first passing
one) unless another one's lead is outside the measured spread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeserve.converter.build import Built
from edgeserve.converter.calibration import Dataset
from edgeserve.converter.gate import Budget, compare_outputs, gate_failure
from edgeserve.converter.latency import first_batch, measure_alternated, significantly_faster
from edgeserve.converter.tasks import Metric, TaskScore, score_task
from edgeserve.converter.validate import (
    BundleRunner,
    Runner,
    open_bundle_runner,
    run_batch_size,
    run_dataset,
)

from edgeserve.errors import ConversionError

__all__ = ["Candidate", "Fidelity", "choose", "evaluate", "measure_latency"]


@dataclass(frozen=True)
class Fidelity:
    """How the converted outputs are judged.

    Attributes:
        task: ``classify`` | ``detect`` | ... or None (per-output cosine/SNR only).
        labels: class ids per validation row (``classify`` accuracy).
        metric: a user metric (``--metric``), with its name.
        budget: the gate's thresholds.
    """

    task: str | None
    labels: np.ndarray | None
    metric: Metric | None
    metric_name: str
    budget: Budget


@dataclass
class Candidate:
    """A built candidate and its figures."""

    built: Built
    outputs: dict[str, dict[str, Any]]
    task: TaskScore | None
    failure: str | None
    size_bytes: int
    latency: dict[str, float] = field(default_factory=dict)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    float_set: str = ""  # which mixed-precision float set it tried (empty: none)

    @property
    def name(self) -> str:
        """Target name, with ``+mixed`` when nodes were kept in float."""
        excluded = self.built.options.get("excluded_nodes")
        return self.built.target.name + (f"+mixed({len(excluded)})" if excluded else "")

    def summary(self) -> dict[str, Any]:
        """The manifest's ``candidates`` entry."""
        return {
            "target": self.name,
            "p50_ms": round(self.latency.get("p50_ms", float("nan")), 4),
            "spread_ms": round(self.latency.get("spread_ms", float("nan")), 4),
            "size_bytes": self.size_bytes,
            "drop_points": None if self.task is None else self.task.drop_points,
            "within_budget": self.failure is None,
            "refused": self.failure,
            "excluded_nodes": len(self.built.options.get("excluded_nodes") or ()),
            "float_set": self.float_set or None,
        }


def bundle_size(built: Built) -> int:
    """Bytes of the model file and its external data (not the sample)."""
    files = built.bundle.manifest.files
    return sum(f.size for f in files if f.role == "model" or f.path.endswith(".data"))


def evaluate(
    built: Built,
    data: Dataset,
    original: list[np.ndarray],
    fidelity: Fidelity,
    batch: int,
    threads: int,
) -> Candidate:
    """Run ``built`` on the validation rows and judge it.

    Raises:
        ModelError: the runtime refuses the bundle.
    """
    feeds = {built.name_map[k]: v for k, v in data.items()}
    runner = open_bundle_runner(built.bundle, built.quant, threads)
    try:
        inputs = built.bundle.manifest.inputs
        converted = run_dataset(runner, feeds, run_batch_size(inputs, batch))
    finally:
        runner.close()
    names = [o.name for o in built.bundle.manifest.outputs]
    outputs = compare_outputs(names, original, converted)
    task = None
    if fidelity.task is not None or fidelity.metric is not None:
        task = score_task(
            fidelity.task or "",
            original,
            converted,
            fidelity.labels,
            fidelity.metric,
            fidelity.metric_name,
        )
    failure = gate_failure(outputs, task, fidelity.budget)
    return Candidate(built, outputs, task, failure, bundle_size(built))


def measure_latency(
    original: Runner,
    original_feed: Dataset,
    candidates: Sequence[Candidate],
    data: Dataset,
    threads: int,
) -> dict[str, float]:
    """Time the original and every candidate at batch 1 in alternated rounds; each candidate's
    ``latency`` is filled in, the original's figures returned."""
    runners: list[tuple[Runner, dict[str, np.ndarray]]] = [(original, original_feed)]
    opened: list[BundleRunner] = []
    try:
        for c in candidates:
            r = open_bundle_runner(c.built.bundle, c.built.quant, threads)
            opened.append(r)
            feeds = {c.built.name_map[k]: v for k, v in data.items()}
            runners.append(
                (r, first_batch(feeds, run_batch_size(c.built.bundle.manifest.inputs, 1)))
            )
        results = measure_alternated(runners)
    finally:
        for r in opened:
            r.close()
    for c, result in zip(candidates, results[1:], strict=True):
        c.latency = result
    return results[0]


def choose(
    candidates: Sequence[Candidate], budget_text: Callable[[], str], objective: str = "latency"
) -> Candidate:
    """The candidate the gate passes that serves ``objective`` best.

    ``latency``: the fastest whose lead is outside the spread. The baseline is the fp32 member
    when it passes, else the first passing candidate; another candidate replaces the current
    choice only when :func:`significantly_faster` says so. ``size``: the smallest bundle (the
    faster of two equal sizes), whatever its speed.

    Raises:
        ConversionError: no candidate passes; the message names each refusal.
    """
    passing = [c for c in candidates if c.failure is None]
    if not passing:
        raise ConversionError(
            f"no candidate stays within {budget_text()}: "
            + "; ".join(f"{c.name}: {c.failure}" for c in candidates)
            + "; no bundle written"
        )
    if objective == "size":
        return min(passing, key=lambda c: (c.size_bytes, c.latency.get("p50_ms", float("inf"))))
    fp32 = [c for c in passing if c.built.target.precision == "fp32"]
    best = fp32[0] if fp32 else passing[0]
    for c in sorted(passing, key=lambda c: c.latency.get("p50_ms", float("inf"))):
        if c is not best and significantly_faster(c.latency, best.latency):
            best = c
    return best
