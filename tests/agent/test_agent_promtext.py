"""The agent's own metric families, read back by prometheus_client's text parser and compared
with what prometheus_client itself exposes for the same observations."""

from __future__ import annotations

import threading
import time

import pytest
from edgeserve.agent.serving.promtext import (
    Counter,
    Gauge,
    Histogram,
    ProcessFamilies,
    Registry,
)
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PCounter
from prometheus_client import Gauge as PGauge
from prometheus_client import Histogram as PHistogram
from prometheus_client.parser import text_string_to_metric_families

BUCKETS = (0.001, 0.01, 0.1, 1.0)
OBSERVED = (0.0005, 0.001, 0.002, 0.05, 0.5, 3.0, 7.5)
HOSTILE = 'we"ird\\name\nline'


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _fill(counter, gauge, histogram) -> None:
    counter.labels("cnn", "1").inc()
    counter.labels("cnn", "1").inc(4)
    counter.labels(HOSTILE, "2").inc(2)
    gauge.labels("cnn", "1").inc(3)
    gauge.labels("cnn", "1").dec()
    gauge.labels(HOSTILE, "2").set(-1.5)
    for value in OBSERVED:
        histogram.labels("cnn", "1").observe(value)


def test_promtext_exposes_what_prometheus_client_exposes_for_the_same_observations() -> None:
    ours = Registry()
    labels = ("model", "version")
    _fill(
        Counter("es_requests", "Requests.", labels, registry=ours),
        Gauge("es_pending", "Pending.", labels, registry=ours, multiprocess_mode="livesum"),
        Histogram("es_seconds", "Time.", labels, registry=ours, buckets=BUCKETS),
    )
    reference = CollectorRegistry()
    _fill(
        PCounter("es_requests", "Requests.", labels, registry=reference),
        PGauge("es_pending", "Pending.", labels, registry=reference),
        PHistogram("es_seconds", "Time.", labels, registry=reference, buckets=BUCKETS),
    )
    from prometheus_client import generate_latest

    got = _samples(ours.render().decode())
    assert got == _samples(generate_latest(reference).decode())
    # the figures themselves, not only their agreement
    assert got[("es_requests_total", (("model", "cnn"), ("version", "1")))] == 5
    assert got[("es_requests_total", (("model", HOSTILE), ("version", "2")))] == 2
    assert got[("es_pending", (("model", HOSTILE), ("version", "2")))] == -1.5
    cnn = (("model", "cnn"), ("version", "1"))
    assert got[("es_seconds_bucket", (("le", "0.001"), *cnn))] == 2  # le is inclusive
    assert got[("es_seconds_bucket", (("le", "+Inf"), *cnn))] == len(OBSERVED)
    assert got[("es_seconds_count", cnn)] == len(OBSERVED)
    assert abs(got[("es_seconds_sum", cnn)] - sum(OBSERVED)) < 1e-12


def test_promtext_counts_exactly_under_concurrent_threads() -> None:
    registry = Registry()
    counter = Counter("es_hits", "Hits.", ("model",), registry=registry)
    histogram = Histogram("es_t", "T.", ("model",), registry=registry, buckets=BUCKETS)
    child, observed = counter.labels("m"), histogram.labels("m")

    def work() -> None:
        for _ in range(20_000):
            child.inc()
            observed.observe(0.005)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = _samples(registry.render().decode())
    assert got[("es_hits_total", (("model", "m"),))] == 160_000
    assert got[("es_t_count", (("model", "m"),))] == 160_000


def test_promtext_refuses_what_prometheus_would_refuse() -> None:
    registry = Registry()
    counter = Counter("es_c", "C.", ("model",), registry=registry)
    with pytest.raises(ValueError, match="increase"):
        counter.labels("m").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        counter.labels("m", "extra")


def test_promtext_process_families_describe_this_process() -> None:
    registry = Registry()
    ProcessFamilies(registry)
    got = {name: value for (name, _), value in _samples(registry.render().decode()).items()}
    with open("/proc/self/status", encoding="ascii") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    assert abs(got["process_resident_memory_bytes"] - rss) < 16 * 2**20
    assert got["process_cpu_seconds_total"] > 0
    assert got["process_open_fds"] >= 3
    assert got["process_max_fds"] >= got["process_open_fds"]
    assert got["process_virtual_memory_bytes"] >= got["process_resident_memory_bytes"]
    # this test process started before now, and not days ago
    assert time.time() - 6 * 3600 < got["process_start_time_seconds"] <= time.time()
