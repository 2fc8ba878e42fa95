"""Counters, gauges and histograms for one serving process, written in Prometheus' text format.

The agent's own, because of memory: ``import prometheus_client`` maps 9.5 MB on top of numpy
and ONNX Runtime (x86_64, CPython 3.11, prometheus_client 0.26), since its package import
also loads its exposition module and with it ``http.server``, ``urllib``, ``wsgiref`` and
``ssl``. In the agent, which loads ``ssl`` through asyncio anyway, serving from these families
instead lowered idle RSS from 78.2 to 75.9 MB without fleet sync and from 82.1 to 80.6 MB with
it (``benchmarks/agent.py --rss-only``, cnn + linear, median of 3 each). The families keep
prometheus_client's method names (``labels``, ``inc``, ``dec``, ``set``, ``observe``), so with
several serving processes, where prometheus_client's multiprocess mode adds the processes'
values up, the agent uses prometheus_client's own classes instead (``metrics.py``).

What it writes is the text exposition format 0.0.4: ``# HELP``/``# TYPE`` per family,
counters with a ``_total`` suffix, cumulative histogram buckets with ``le``, and the
``process_*`` families of the Prometheus client guidelines (from ``/proc``, on Linux).
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "ProcessFamilies", "Registry"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class Registry:
    """The families of one process, rendered in registration order."""

    def __init__(self) -> None:
        self._families: list[_Family | ProcessFamilies] = []

    def register(self, family: _Family | ProcessFamilies) -> None:
        self._families.append(family)

    def render(self) -> bytes:
        lines: list[str] = []
        for family in self._families:
            lines.extend(family.lines())
        return ("\n".join(lines) + "\n").encode()


class _Child:
    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value -= amount

    def set(self, value: float) -> None:
        with self._lock:
            self.value = float(value)


class _CounterChild(_Child):
    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter can only increase")
        super().inc(amount)


class _HistogramChild:
    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._lock = threading.Lock()
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        slot = bisect.bisect_left(self._bounds, value)
        with self._lock:
            self._counts[slot] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self._counts), self._sum


class _Family:
    kind = ""
    suffix = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        registry: Registry,
    ) -> None:
        self.name = name + self.suffix
        self._help = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def _new_child(self) -> object:
        raise NotImplementedError

    def labels(self, *values: object) -> object:
        key = tuple(str(v) for v in values)
        if len(key) != len(self._labelnames):
            raise ValueError(f"{self.name} takes labels {self._labelnames}, got {key}")
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
        return child

    def _samples(self) -> Iterator[str]:
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            yield f"{self.name}{_labels(self._labelnames, key)} {_number(child.value)}"  # type: ignore[attr-defined]

    def lines(self) -> Iterator[str]:
        yield f"# HELP {self.name} {_escape_help(self._help)}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self._samples()


class Counter(_Family):
    """A monotonically increasing count, exposed as ``<name>_total``."""

    kind = "counter"
    suffix = "_total"

    def _new_child(self) -> _CounterChild:
        return _CounterChild()


class Gauge(_Family):
    """A value that goes up and down (``multiprocess_mode`` matters to prometheus_client only)."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        registry: Registry,
        multiprocess_mode: str = "",
    ) -> None:
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> _Child:
        return _Child()


class Histogram(_Family):
    """Observations counted in cumulative ``le`` buckets, with their ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        registry: Registry,
        buckets: Sequence[float],
    ) -> None:
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        if not bounds:
            raise ValueError("a histogram needs at least one finite bucket")
        self._bounds = bounds
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self._bounds)

    def _samples(self) -> Iterator[str]:
        with self._lock:
            children = list(self._children.items())
        les = [_number(b) for b in self._bounds] + ["+Inf"]
        for key, child in children:
            counts, total = child.snapshot()  # type: ignore[attr-defined]
            running = 0
            for le, count in zip(les, counts, strict=True):
                running += count
                labels = _labels(self._labelnames, key, f'le="{le}"')
                yield f"{self.name}_bucket{labels} {_number(running)}"
            plain = _labels(self._labelnames, key)
            yield f"{self.name}_count{plain} {_number(running)}"
            yield f"{self.name}_sum{plain} {_number(total)}"


class ProcessFamilies:
    """``process_*`` gauges of this process read from ``/proc`` at each scrape (Linux only)."""

    def __init__(self, registry: Registry) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._boot: float | None = None  # boot time, read once: it does not change
        registry.register(self)

    def _boot_time(self) -> float:
        if self._boot is None:
            self._boot = time.time() - time.monotonic()
            with open("/proc/stat", encoding="ascii") as f:
                for line in f:
                    if line.startswith("btime "):
                        self._boot = float(line.split()[1])
                        break
        return self._boot

    def lines(self) -> Iterator[str]:
        try:
            with open("/proc/self/stat", encoding="ascii") as f:
                # fields after the command name, which may itself hold spaces or parentheses
                fields = f.read().rsplit(")", 1)[1].split()
            fds = len(os.listdir("/proc/self/fd"))
            max_fds = float("nan")
            with open("/proc/self/limits", encoding="ascii") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        soft = line.split()[3]
                        max_fds = float("inf") if soft == "unlimited" else float(soft)
            boot = self._boot_time()
        except (OSError, ValueError, IndexError):
            return
        values = (
            ("virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", float(fields[20])),
            (
                "resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                float(fields[21]) * self._page,
            ),
            (
                "start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot + float(fields[19]) / self._tick,
            ),
            (
                "cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (float(fields[11]) + float(fields[12])) / self._tick,
            ),
            ("open_fds", "gauge", "Number of open file descriptors.", float(fds)),
            ("max_fds", "gauge", "Maximum number of open file descriptors.", max_fds),
        )
        for name, kind, doc, value in values:
            yield f"# HELP process_{name} {doc}"
            yield f"# TYPE process_{name} {kind}"
            yield f"process_{name} {_number(value)}"
