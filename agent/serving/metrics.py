"""Prometheus metrics, labelled ``model`` and ``version``.

Names follow Triton's metrics (``nv_inference_request_success``, ``nv_inference_count``,
``nv_inference_exec_count``, ``nv_inference_queue_duration_us``, ...) under an ``edgeserve_``
prefix and Prometheus' base units (seconds): average batch size is
``edgeserve_inference_count_total / edgeserve_inference_exec_count_total``.
Process memory and CPU are the ``process_*`` families (``process_resident_memory_bytes``,
``process_cpu_seconds_total``).

One serving process keeps its values in ``promtext`` (the agent's own families, 2.3 MB less
idle RSS than prometheus_client's). With several serving processes (``[server] processes``) the
supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` and prometheus_client's multiprocess mode keeps
each process's
values in a file there; ``/metrics`` from any process reports the sums over all of them
(gauges: pending requests summed over live processes, model readiness their maximum). The
``process_*`` families are then left out: they would describe only the answering process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Metrics", "VersionMetrics"]

# Latency buckets in seconds: sub-millisecond resolution for small edge models.
_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


@dataclass
class VersionMetrics:
    """Pre-bound metric children for one model version (binding once keeps requests cheap)."""

    success: Any
    inference_count: Any
    exec_count: Any
    request_duration: Any
    queue_duration: Any
    compute_duration: Any
    pending: Any
    _failure: Any
    _labels: tuple[str, str]

    def failure(self, reason: str) -> None:
        """Count a failed request with its reason (``bad_input``, ``queue_full``, ...)."""
        self._failure.labels(*self._labels, reason).inc()


class Metrics:
    """The agent's registry and metric families."""

    def __init__(self) -> None:
        self._multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        if self._multiprocess_dir:
            from prometheus_client import (
                CollectorRegistry,
                Counter,
                Gauge,
                Histogram,
                disable_created_metrics,
            )

            # `*_created` timestamps double the exposition size and nobody on a device needs them
            disable_created_metrics()
            self.registry: Any = CollectorRegistry()
        else:
            from edgeserve.agent.serving.promtext import (
                Counter,
                Gauge,
                Histogram,
                ProcessFamilies,
                Registry,
            )

            self.registry = Registry()
            ProcessFamilies(self.registry)
        mv = ("model", "version")
        r = self.registry
        self._success = Counter(
            "edgeserve_inference_request_success",
            "Successful inference requests.",
            mv,
            registry=r,
        )
        self._failure = Counter(
            "edgeserve_inference_request_failure",
            "Failed inference requests by reason.",
            (*mv, "reason"),
            registry=r,
        )
        self._count = Counter(
            "edgeserve_inference_count",
            "Inferences performed (rows; a batch of 8 counts 8).",
            mv,
            registry=r,
        )
        self._exec = Counter(
            "edgeserve_inference_exec_count", "Model executions (batches run).", mv, registry=r
        )
        self._request = Histogram(
            "edgeserve_request_duration_seconds",
            "Request time from arrival to response.",
            mv,
            buckets=_BUCKETS,
            registry=r,
        )
        self._queue = Histogram(
            "edgeserve_queue_duration_seconds",
            "Time requests waited in the batch queue.",
            mv,
            buckets=_BUCKETS,
            registry=r,
        )
        self._compute = Histogram(
            "edgeserve_compute_duration_seconds",
            "Model execution time per batch.",
            mv,
            buckets=_BUCKETS,
            registry=r,
        )
        self._pending = Gauge(
            "edgeserve_pending_requests",
            "Requests queued or executing.",
            mv,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ab_requests = Counter(
            "edgeserve_ab_requests",
            "Requests routed through an A/B alias, per arm.",
            ("alias", "arm", "model", "version"),
            registry=r,
        )
        self.loaded = Gauge(
            "edgeserve_model_ready",
            "1 when a model version is loaded and ready.",
            mv,
            registry=r,
            multiprocess_mode="livemax",
        )

    def for_version(self, model: str, version: int) -> VersionMetrics:
        """Bind every family's children for one model version."""
        labels = (model, str(version))
        return VersionMetrics(
            success=self._success.labels(*labels),
            inference_count=self._count.labels(*labels),
            exec_count=self._exec.labels(*labels),
            request_duration=self._request.labels(*labels),
            queue_duration=self._queue.labels(*labels),
            compute_duration=self._compute.labels(*labels),
            pending=self._pending.labels(*labels),
            _failure=self._failure,
            _labels=labels,
        )

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        from edgeserve.agent.serving.promtext import CONTENT_TYPE

        if not self._multiprocess_dir:
            return self.registry.render(), CONTENT_TYPE
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        return generate_latest(registry), CONTENT_TYPE
