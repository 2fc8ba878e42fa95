"""Queries on ``telemetry``: one row per device, model version and telemetry window."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from .base import Queries

__all__ = ["TelemetryQueries"]


class TelemetryQueries(Queries):
    """Telemetry windows: upsert, read per version or per device, prune."""

    def add_telemetry(self, rows: Iterable[Sequence[Any]]) -> None:
        """Upsert ``(device, model, version, window_ts, count, errors, p50, p95, p99,
        experiment)`` rows."""
        now = time.time()
        self.db.executemany(
            "INSERT INTO telemetry (device, model, version, window_ts, count, errors, p50, p95, "
            "p99, experiment, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (device, model, version, window_ts) DO UPDATE SET "
            "count = excluded.count, errors = excluded.errors, p50 = excluded.p50, "
            "p95 = excluded.p95, p99 = excluded.p99, experiment = excluded.experiment, "
            "received = excluded.received",
            [(*r, now) for r in rows],
        )

    def telemetry(
        self,
        model: str,
        version: int,
        since: float = 0.0,
        devices: Sequence[str] | None = None,
        experiment: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Telemetry windows ``(device, window_ts, count, errors, p50, p95, p99)``; with
        ``experiment``, only the windows the devices labelled with it."""
        where, params = "", [model, version, since]
        if experiment is not None:
            where, params = " AND experiment = ?", [*params, experiment]
        rows = self.db.query(
            "SELECT device, window_ts, count, errors, p50, p95, p99 FROM telemetry "
            f"WHERE model = ? AND version = ? AND window_ts >= ?{where} ORDER BY window_ts",
            params,
        )
        if devices is not None:
            wanted = set(devices)
            rows = [r for r in rows if r[0] in wanted]
        return rows

    def device_telemetry(self, device: str, limit: int = 10) -> list[dict[str, Any]]:
        """The newest telemetry windows of ``device``, newest first."""
        rows = self.db.query(
            "SELECT model, version, window_ts, count, errors, p50, p95, p99, experiment "
            "FROM telemetry WHERE device = ? ORDER BY window_ts DESC LIMIT ?",
            (device, limit),
        )
        keys = ("model", "version", "window_ts", "count", "errors", "p50", "p95", "p99")
        return [{**dict(zip(keys, r[:8], strict=True)), "experiment": r[8]} for r in rows]

    def prune_telemetry(self, before: float) -> None:
        """Drop telemetry windows older than ``before``."""
        self.db.execute("DELETE FROM telemetry WHERE window_ts < ?", (before,))
