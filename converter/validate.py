"""Validation: run the original and the converted bundle on the same rows, compare, time both.

The converted model runs through :func:`edgeserve.runtimes.load_runtime`, the runtime the agent
uses, so what is measured here is what the device will run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from edgeserve.converter.calibration import Dataset, batches

from edgeserve.bundle import Bundle
from edgeserve.manifest import TensorSpec
from edgeserve.runtimes import RuntimeOptions, load_runtime

__all__ = ["Runner", "compare", "latency_ms", "open_bundle_runner", "run_batch_size", "run_dataset"]

Runner = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
LATENCY_RUNS: Final = 200  # at most this many timed runs per measurement
LATENCY_BUDGET_S: Final = 1.5  # seconds of timed runs per measurement, whichever ends first
WARMUP_RUNS: Final = 5


@dataclass
class BundleRunner:
    """A bundle loaded in the agent's runtime, with int8 I/O (de)quantized around it."""

    runtime: Any
    quant: Mapping[str, Mapping[str, float]]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        prepared = {}
        for spec in self.runtime.inputs:
            array = feeds[spec.name]
            q = self.quant.get(spec.name)
            if q is not None:
                info = np.iinfo(np.int8 if spec.datatype == "INT8" else np.uint8)
                scaled = np.round(array / q["scale"] + q["zero_point"])
                array = np.clip(scaled, info.min, info.max).astype(info.dtype)
            prepared[spec.name] = array
        out = self.runtime.run(prepared)
        results = []
        for spec in self.runtime.outputs:
            array = out[spec.name]
            q = self.quant.get(spec.name)
            if q is not None:
                array = (array.astype(np.float32) - q["zero_point"]) * np.float32(q["scale"])
            results.append(array)
        return results

    def close(self) -> None:
        """Release the runtime."""
        self.runtime.close()


def open_bundle_runner(
    bundle: Bundle, quant: Mapping[str, Mapping[str, float]], threads: int = 0
) -> BundleRunner:
    """Load ``bundle`` as the agent would (CPU fallback for GPU/NPU providers).

    Args:
        bundle: the bundle.
        quant: int8 I/O quantization parameters by tensor name.
        threads: intra-op threads; 0 = the runtime's default (what the agent uses).

    Raises:
        ModelError: the runtime refuses the model.
    """
    from edgeserve.converter.loaders import quiet_native_stderr

    with quiet_native_stderr():  # TFLite announces its XNNPACK delegate on stderr
        runtime = load_runtime(bundle, RuntimeOptions(threads=threads))
    return BundleRunner(runtime, quant)


def run_batch_size(inputs: tuple[TensorSpec, ...], wanted: int) -> int:
    """Rows per call: the model's fixed first dimension if it has one, else ``wanted``."""
    first = inputs[0].shape[0] if inputs and inputs[0].shape else -1
    return first if first > 0 else wanted


def run_dataset(runner: Runner, data: Dataset, batch: int) -> list[np.ndarray]:
    """Run every row, ``batch`` rows per call; outputs concatenated along the first axis."""
    parts: list[list[np.ndarray]] = []
    for chunk in batches(data, batch):
        parts.append([np.asarray(o) for o in runner(chunk)])
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def compare(
    original: list[np.ndarray], converted: list[np.ndarray], labels: np.ndarray | None
) -> dict[str, Any]:
    """Agreement metrics between two sets of outputs (first output = the prediction).

    Returns:
        ``max_abs_err`` (over all float outputs), ``cosine`` (first output, flattened),
        ``top1_agreement`` (0..1, when the first output has classes on its last axis), and
        with labels ``accuracy_original`` / ``accuracy_converted`` (0..1).
    """
    errs = [
        float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        for a, b in zip(original, converted, strict=True)
        if a.size and a.shape == b.shape
    ]
    a = original[0].astype(np.float64).ravel()
    b = converted[0].astype(np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    metrics: dict[str, Any] = {
        "rows": int(original[0].shape[0]),
        "max_abs_err": max(errs) if errs else None,
        "cosine": float(a @ b / denom) if denom else (1.0 if not a.any() and not b.any() else 0.0),
    }
    if original[0].ndim >= 2 and original[0].shape[-1] > 1:
        top_a = original[0].reshape(original[0].shape[0], -1).argmax(axis=1)
        top_b = converted[0].reshape(converted[0].shape[0], -1).argmax(axis=1)
        metrics["top1_agreement"] = float(np.mean(top_a == top_b))
        if labels is not None:
            metrics["accuracy_original"] = float(np.mean(top_a == labels))
            metrics["accuracy_converted"] = float(np.mean(top_b == labels))
    return metrics


def latency_ms(runner: Runner, data: Dataset, batch: int) -> dict[str, float]:
    """p50/p95 latency of one call with ``batch`` rows (first rows, repeated if too few).

    Bounded: at most :data:`LATENCY_RUNS` runs or :data:`LATENCY_BUDGET_S` seconds.
    """
    feed = {}
    for name, array in data.items():
        reps = -(-batch // array.shape[0])
        feed[name] = np.concatenate([array] * reps)[:batch] if reps > 1 else array[:batch]
    for _ in range(WARMUP_RUNS):
        runner(feed)
    times: list[float] = []
    deadline = time.perf_counter() + LATENCY_BUDGET_S
    while len(times) < LATENCY_RUNS and (len(times) < 10 or time.perf_counter() < deadline):
        start = time.perf_counter()
        runner(feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "runs": len(times),
    }
