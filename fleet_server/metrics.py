"""The fleet server's Prometheus ``/metrics`` (prometheus_client), computed at scrape time.

A custom collector reads the store and the engine's counters on each scrape, so a replica that
restarts or another replica's writes are reflected without bookkeeping of our own
(prometheus_client docs, "Custom Collectors"). Families:

- ``edgeserve_fleet_devices{presence}`` and ``edgeserve_fleet_device_models{model, state}``;
- ``edgeserve_fleet_rollout_phase_percent`` / ``edgeserve_fleet_rollout_phase_index`` and
  ``edgeserve_fleet_rollout_devices{state}`` for running and paused rollouts, labelled
  ``rollout, model, version, status``;
- ``edgeserve_fleet_gate_decisions_total{decision}``: what the controller decided since start;
- ``edgeserve_fleet_mqtt_received_total{kind}``, ``edgeserve_fleet_mqtt_dropped_total{reason}``,
  ``edgeserve_fleet_telemetry_windows_total``, ``edgeserve_fleet_telemetry_lag_seconds`` (from a
  window's end on the device to its ingestion, newest batch),
  ``edgeserve_fleet_reported_stale_total`` and ``edgeserve_fleet_desired_published_total``,
  each counting this replica's share only;
- ``edgeserve_fleet_controller_leader``: 1 on the replica that runs the rollout controller;
- ``edgeserve_fleet_broker_connected``, ``edgeserve_fleet_broker_state{state}``,
  ``edgeserve_fleet_broker_outages_total``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .broker.status import STATES

if TYPE_CHECKING:
    from .server import FleetServer

__all__ = ["CONTENT_TYPE", "FleetCollector", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class FleetCollector(Collector):
    """Collects the families above from one :class:`~.server.FleetServer`."""

    def __init__(self, fs: FleetServer) -> None:
        self.fs = fs

    def collect(self) -> Iterator[Metric]:
        """One scrape."""
        fs, store = self.fs, self.fs.store
        presence = GaugeMetricFamily(
            "edgeserve_fleet_devices", "Registered devices by presence.", labels=["presence"]
        )
        for state, n in sorted(store.presence_counts().items()):
            presence.add_metric([state], n)
        yield presence
        models = GaugeMetricFamily(
            "edgeserve_fleet_device_models",
            "Devices by model and reported install state.",
            labels=["model", "state"],
        )
        for (model, state), n in sorted(store.reported_state_counts().items()):
            models.add_metric([model, state], n)
        yield models

        labels = ["rollout", "model", "version", "status"]
        pct = GaugeMetricFamily(
            "edgeserve_fleet_rollout_phase_percent", "Current phase percent.", labels=labels
        )
        idx = GaugeMetricFamily(
            "edgeserve_fleet_rollout_phase_index", "Current phase (0-based).", labels=labels
        )
        per_state = GaugeMetricFamily(
            "edgeserve_fleet_rollout_devices",
            "Devices of a rollout by state.",
            labels=[*labels, "state"],
        )
        for r in store.active_rollout_progress():
            key = [str(r["id"]), r["model"], str(r["version"]), r["status"]]
            pct.add_metric(key, r["phase_percent"])
            idx.add_metric(key, r["phase_index"])
            for state, n in sorted(r["counts"].items()):
                per_state.add_metric([*key, state], n)
        yield pct
        yield idx
        yield per_state

        engine = fs.engine
        decisions = CounterMetricFamily(
            "edgeserve_fleet_gate_decisions",
            "Rollout controller decisions since start.",
            labels=["decision"],
        )
        for name, n in sorted(engine.decisions.items()):
            decisions.add_metric([name], n)
        yield decisions
        received = CounterMetricFamily(
            "edgeserve_fleet_mqtt_received", "MQTT messages received.", labels=["kind"]
        )
        for kind, n in sorted(engine.counters.received.items()):
            received.add_metric([kind], n)
        yield received
        dropped = CounterMetricFamily(
            "edgeserve_fleet_mqtt_dropped", "MQTT messages dropped.", labels=["reason"]
        )
        for reason, n in sorted(engine.counters.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield CounterMetricFamily(
            "edgeserve_fleet_telemetry_windows",
            "Telemetry windows ingested.",
            value=engine.counters.windows,
        )
        yield GaugeMetricFamily(
            "edgeserve_fleet_telemetry_lag_seconds",
            "Seconds from a telemetry window's end on the device to its ingestion (newest "
            "batch, largest).",
            value=engine.counters.lag_s,
        )
        yield CounterMetricFamily(
            "edgeserve_fleet_reported_stale",
            "Reported documents older than the stored one (out of order between replicas), "
            "not recorded.",
            value=engine.counters.stale_reports,
        )
        yield GaugeMetricFamily(
            "edgeserve_fleet_controller_leader",
            "1 when this replica runs the rollout controller (holds the lock).",
            value=1.0 if engine.leader else 0.0,
        )
        yield CounterMetricFamily(
            "edgeserve_fleet_desired_published",
            "Desired-state documents published.",
            value=engine.published,
        )

        broker = fs.broker_status.to_dict()
        yield GaugeMetricFamily(
            "edgeserve_fleet_broker_connected",
            "1 when the MQTT connection is up.",
            value=1.0 if broker["state"] == "connected" else 0.0,
        )
        state = GaugeMetricFamily(
            "edgeserve_fleet_broker_state", "The broker connection state.", labels=["state"]
        )
        for s in STATES:
            state.add_metric([s], 1.0 if broker["state"] == s else 0.0)
        yield state
        yield CounterMetricFamily(
            "edgeserve_fleet_broker_outages", "Broker outages since start.", value=broker["outages"]
        )


def render(fs: FleetServer) -> bytes:
    """The Prometheus text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fs))
    return generate_latest(registry)
