"""Telemetry upload for fleet sync: the agent's on-disk buffer -> QoS 1 ``telemetry`` messages.

At-least-once (MQTT 3.1.1 section 4.3.2): a batch is acknowledged in the buffer only when the
broker's PUBACK arrives, so records survive an outage or a restart and are sent afterwards; one
batch is in flight at a time, and nothing is published while disconnected.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from edgeserve.agent.sync.agent_adapter import TelemetrySource

from edgeserve.errors import TransportError
from edgeserve.mqtt import MqttClient
from edgeserve.protocol import ProtocolError, Telemetry, encode
from edgeserve.trust import format_time

__all__ = ["TelemetryPublisher"]

log = logging.getLogger(__name__)


class TelemetryPublisher:
    """Publishes ``source``'s records every ``interval_s`` on its own thread.

    Args:
        source: the telemetry buffer.
        mqtt: the device's client.
        topic: the device's telemetry topic.
        device: the device id (in each message).
        batch: records per message.
        interval_s: seconds between flushes.
        clock: the time stamped on messages.
        stats: counters to update (``published_telemetry``, ``telemetry_acked``).
    """

    def __init__(
        self,
        source: TelemetrySource,
        mqtt: MqttClient,
        topic: str,
        device: str,
        *,
        batch: int,
        interval_s: float,
        clock: Callable[[], datetime],
        stats: Counter[str],
    ) -> None:
        self.source = source
        self.mqtt = mqtt
        self.topic = topic
        self.device = device
        self.batch = batch
        self.interval_s = interval_s
        self.clock = clock
        self.stats = stats
        self.inflight = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._tick, name=f"fleet-telemetry-{device}", daemon=True
        )

    def start(self) -> None:
        """Start the periodic flush thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (records not yet acknowledged stay in the buffer)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def reconnected(self) -> None:
        """After a reconnect paho resends an unacknowledged batch itself; allow new ones."""
        self.inflight = False

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:
                log.exception("fleet sync %s: telemetry flush failed", self.device)

    def flush(self) -> int:
        """Publish one batch if connected and none is in flight; returns the records sent."""
        if self.inflight or not self.mqtt.connected:
            return 0
        batch = self.source.pending(self.batch)
        if not batch:
            return 0
        last_id = batch[-1][0]
        message = Telemetry(
            self.device,
            format_time(self.clock()),
            tuple(r for _, r in batch),
            self.source.dropped,
        )

        def acked() -> None:
            self.source.ack(last_id)
            self.inflight = False
            self.stats["telemetry_acked"] += len(batch)

        self.inflight = True
        try:
            self.mqtt.publish(self.topic, encode(message), on_ack=acked)
        except (TransportError, ProtocolError) as exc:
            self.inflight = False
            log.warning("fleet sync %s: telemetry not sent: %s", self.device, exc)
            return 0
        self.stats["published_telemetry"] += 1
        return len(batch)
