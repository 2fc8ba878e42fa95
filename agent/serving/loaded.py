"""One loaded model version: runtime, warm-up, batcher, metrics and telemetry statistics."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeserve.agent.config import ModelConfig, RuntimeConfig
from edgeserve.agent.serving.batcher import Batcher, BatchResult
from edgeserve.agent.serving.metrics import Metrics, VersionMetrics
from edgeserve.agent.serving.telemetry import TelemetryBuffer

from edgeserve.bundle import Bundle, read_labels
from edgeserve.bundle.manifest import SAMPLE_ROLE, TensorSpec
from edgeserve.datatypes import to_numpy
from edgeserve.errors import (
    DeadlineExceededError,
    EdgeServeError,
    InferenceInputError,
    ModelError,
    QueueFullError,
    UnavailableError,
)
from edgeserve.runtimes import Runtime, RuntimeOptions, load_runtime
from edgeserve.runtimes.base import check_feeds

__all__ = [
    "LoadedModel",
    "Stats",
    "Totals",
    "load_version",
    "open_runtime",
    "percentile",
    "sample_feeds",
]

_RESERVOIR = 4096  # latencies kept per telemetry window (uniform reservoir sample)


def sample_feeds(bundle: Bundle, inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """The bundle's ``sample`` inputs (role "sample", an ``.npz`` keyed by input name), else
    generated ones: zeros with every dynamic dimension set to 1.

    Raises:
        ModelError: the sample file does not fit the model.
    """
    path = bundle.file_path(SAMPLE_ROLE)
    if path is not None:
        # imported only for a bundle that has a sample file (the npz reader comes with it)
        from edgeserve.bundle.sample import read_sample

        try:
            sample = read_sample(path)
            feeds = {spec.name: np.asarray(sample.inputs[spec.name]) for spec in inputs}
        except (ModelError, KeyError) as exc:
            raise ModelError(f"sample inputs {path.name} do not fit the model: {exc}") from exc
        return feeds
    feeds = {}
    for spec in inputs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        dtype = to_numpy(spec.datatype)
        feeds[spec.name] = (
            np.full(shape, "", dtype=object)
            if spec.datatype == "BYTES"
            else (np.zeros(shape, dtype=dtype))
        )
    return feeds


def open_runtime(bundle: Bundle, model_cfg: ModelConfig, runtime_cfg: RuntimeConfig) -> Runtime:
    """Load the bundle's runtime with the configured provider order and threads (blocking)."""
    providers = model_cfg.providers or runtime_cfg.providers or None
    options = RuntimeOptions(
        providers=tuple(providers) if providers else None,
        threads=model_cfg.threads or runtime_cfg.threads,
        spin=runtime_cfg.spin,
    )
    return load_runtime(bundle, options)


def check_outputs(outputs: Mapping[str, np.ndarray], specs: tuple[TensorSpec, ...]) -> None:
    """Raise ModelError if outputs are missing or hold NaN/inf (a broken model)."""
    for spec in specs:
        if spec.name not in outputs:
            raise ModelError(f"output {spec.name} missing")
        array = outputs[spec.name]
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ModelError(f"output {spec.name} has NaN or infinite values")


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile of ascending ``ordered`` (non-empty), interpolated linearly
    between the closest ranks as ``numpy.percentile``'s default method does.

    In plain Python because ``numpy.percentile`` imports ``numpy.ma`` (1.3 MB of RSS that an
    idle agent would keep from its first telemetry window on) and sorts a copy anyway.
    """
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    if low + 1 >= len(ordered):
        return float(ordered[-1])
    a, b, t = ordered[low], ordered[low + 1], rank - low
    # numpy's lerp: from the nearer end, so that t = 0 or 1 gives the value itself
    return float(b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t)


@dataclass
class Stats:
    """Counts for one telemetry window; updated in the event loop, read by the reporter."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    executions: int = 0
    rows: int = 0
    max_batch: int = 0
    started: float = field(default_factory=time.time)
    label: str | None = None  # the experiment this window belongs to (on-device A/B)

    def record_latency(self, ms: float) -> None:
        """Keep a uniform reservoir sample of latencies (bounded memory)."""
        self.requests += 1
        if len(self.latencies_ms) < _RESERVOIR:
            self.latencies_ms.append(ms)
        else:
            slot = random.randrange(self.requests)
            if slot < _RESERVOIR:
                self.latencies_ms[slot] = ms

    def summary(self, model: str, version: int) -> dict[str, Any]:
        """The telemetry record for this window."""
        lat = sorted(self.latencies_ms)
        pct = (
            {f"p{p}": round(percentile(lat, p), 4) for p in (50, 95, 99)}
            if lat
            else {"p50": None, "p95": None, "p99": None}
        )
        return {
            "kind": "summary",
            "model": model,
            "version": version,
            "window_start": round(self.started, 3),
            "window_end": round(time.time(), 3),
            "requests": self.requests,
            "errors": dict(self.errors),
            "error_count": sum(self.errors.values()),
            "latency_ms": pct,
            "executions": self.executions,
            "rows": self.rows,
            "batch_mean": round(self.rows / self.executions, 3) if self.executions else None,
            "batch_max": self.max_batch,
            "experiment": self.label,
        }


@dataclass
class Totals:
    """Counters since load, in the shape of Triton's statistics extension (durations in ns)."""

    success: int = 0
    success_ns: int = 0
    fail: int = 0
    fail_ns: int = 0
    queue: int = 0
    queue_ns: int = 0
    compute: int = 0
    compute_ns: int = 0
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0

    def to_triton(self, name: str, version: int) -> dict[str, Any]:
        """One ``model_stats`` entry of Triton's ``GET /v2/models/{m}/stats``."""
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": {"count": self.success, "ns": self.success_ns},
                "fail": {"count": self.fail, "ns": self.fail_ns},
                "queue": {"count": self.queue, "ns": self.queue_ns},
                "compute_infer": {"count": self.compute, "ns": self.compute_ns},
            },
        }


class LoadedModel:
    """A model version ready to serve: its runtime, batcher, labels and counters."""

    def __init__(
        self,
        bundle: Bundle,
        runtime: Runtime,
        model_cfg: ModelConfig,
        executor: Executor,
        metrics: Metrics,
    ) -> None:
        self.bundle = bundle
        self.name = bundle.manifest.name
        self.version = bundle.manifest.version
        self.runtime = runtime
        self.inputs = runtime.inputs
        self.outputs = runtime.outputs
        specs = (*runtime.inputs, *runtime.outputs)
        self.has_batch_dim = bool(specs) and all(s.has_batch_dim for s in specs)
        # Triton's classification extension: the bundle's labels name the first output's classes
        labels_path = bundle.file_path("labels")
        self.labels: dict[str, tuple[str, ...]] = (
            {self.outputs[0].name: read_labels(labels_path)}
            if labels_path is not None and self.outputs
            else {}
        )
        cfg = model_cfg.batching
        self.metrics: VersionMetrics = metrics.for_version(self.name, self.version)
        self.label: str | None = None  # label of the telemetry windows opened from now on
        self.stats = Stats()
        self.totals = Totals()
        self._stats_lock = threading.Lock()
        self.batcher = Batcher(
            self._run,
            executor,
            batching=cfg.enabled and self.has_batch_dim,
            max_batch_size=cfg.max_batch_size,
            max_queue_delay_us=cfg.max_queue_delay_us,
            max_queue_size=cfg.max_queue_size,
            timeout_ms=cfg.timeout_ms,
            instances=cfg.instances,
            observer=self._observe,
        )

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runtime.run(feeds)

    def _observe(self, rows: int, requests: int, compute_s: float) -> None:
        self.metrics.inference_count.inc(rows)
        self.metrics.exec_count.inc()
        self.metrics.compute_duration.observe(compute_s)
        totals = self.totals
        totals.inference_count += rows
        totals.execution_count += 1
        totals.compute += 1
        totals.compute_ns += int(compute_s * 1e9)
        with self._stats_lock:
            self.stats.executions += 1
            self.stats.rows += rows
            self.stats.max_batch = max(self.stats.max_batch, rows)

    async def infer(
        self, feeds: Mapping[str, np.ndarray], timeout_s: float | None = None
    ) -> BatchResult:
        """Check and run one request through the batcher, counting success and failure.

        Args:
            feeds: input arrays.
            timeout_s: a per-request limit shorter than the configured one, or None.

        Raises:
            InferenceInputError, UnavailableError (QueueFullError, DeadlineExceededError,
                ModelUnloadingError), ModelError: see :meth:`Batcher.submit`.
        """
        start = time.perf_counter()
        self.metrics.pending.inc()
        try:
            check_feeds(self.inputs, feeds)
            rows = 1
            if self.has_batch_dim and feeds:
                sizes = {a.shape[0] for a in feeds.values()}
                if len(sizes) > 1:
                    # batched requests are split by rows: every input must agree on them
                    raise InferenceInputError(
                        f"inputs have different batch sizes {sorted(sizes)}; axis 0 must match"
                    )
                rows = sizes.pop()
            result = await self.batcher.submit(feeds, rows, timeout_s)
        except EdgeServeError as exc:
            self.count_failure(_reason(exc))
            raise
        finally:
            self.metrics.pending.dec()
        elapsed = time.perf_counter() - start
        self.metrics.success.inc()
        self.metrics.request_duration.observe(elapsed)
        self.metrics.queue_duration.observe(result.queue_s)
        totals = self.totals
        totals.success += 1
        totals.success_ns += int(elapsed * 1e9)
        totals.queue += 1
        totals.queue_ns += int(result.queue_s * 1e9)
        totals.last_inference_ms = int(time.time() * 1000)
        with self._stats_lock:
            self.stats.record_latency(elapsed * 1000.0)
        return result

    def count_failure(self, reason: str) -> None:
        """Count a failed request in metrics and telemetry."""
        self.metrics.failure(reason)
        self.totals.fail += 1
        with self._stats_lock:
            self.stats.requests += 1
            self.stats.errors[reason] = self.stats.errors.get(reason, 0) + 1

    def take_stats(self) -> Stats:
        """Return the current telemetry window and start a new one."""
        with self._stats_lock:
            stats, self.stats = self.stats, Stats(label=self.label)
        return stats

    def close_window(self, buffer: TelemetryBuffer) -> None:
        """Close the current telemetry window into ``buffer`` (when it counted anything).

        Raises:
            StorageError: the buffer cannot be written.
        """
        stats = self.take_stats()
        if stats.requests or stats.executions:
            buffer.append(stats.summary(self.name, self.version))

    def warm_up(self, runs: int) -> None:
        """Run the sample inputs ``runs`` times (blocking) so the first request is not slow.

        Raises:
            ModelError: the model fails on its own sample inputs.
        """
        feeds = sample_feeds(self.bundle, self.inputs)
        for _ in range(max(1, runs)):
            check_outputs(self.runtime.run(feeds), self.outputs)

    def close(self) -> None:
        """Release the runtime."""
        self.batcher.closed = True
        self.runtime.close()


# metrics and telemetry name a failed request by its error type (first match wins)
_REASONS: tuple[tuple[type[EdgeServeError], str], ...] = (
    (InferenceInputError, "bad_input"),
    (QueueFullError, "queue_full"),
    (DeadlineExceededError, "timeout"),
    (UnavailableError, "unavailable"),
)


def load_version(
    bundle: Bundle,
    model_cfg: ModelConfig,
    runtime_cfg: RuntimeConfig,
    executor: Executor,
    metrics: Metrics,
) -> LoadedModel:
    """Open ``bundle``'s runtime and warm it up (blocking); nothing stays open on failure.

    Raises:
        ModelError: the model cannot be loaded or fails on its own sample inputs.
    """
    runtime = open_runtime(bundle, model_cfg, runtime_cfg)
    model = LoadedModel(bundle, runtime, model_cfg, executor, metrics)
    try:
        model.warm_up(runtime_cfg.warmup_runs)
    except BaseException:
        model.close()
        raise
    return model


def _reason(exc: EdgeServeError) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "model_error"
