"""What a device tells the fleet server: one retained ``reported`` message with the status of
every model it was told about, the desired ``seq`` it has, and why the last desired-state
document was refused (if it was).

Status changes are coalesced (:class:`~edgeserve.protocol.ReportCoalescer`): a report goes
out when a model's state changes, not on every progress step. A failed publish is logged; the
next change or reconnect reports the current state again.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from edgeserve.errors import TransportError
from edgeserve.mqtt import MqttClient
from edgeserve.protocol import ModelStatus, ProtocolError, ReportCoalescer, Reported, encode
from edgeserve.trust import VerificationError, format_time, reason_code

__all__ = ["Reporter"]

log = logging.getLogger(__name__)


class Reporter:
    """The device's model statuses and their reports (used by the worker and the MQTT thread).

    Args:
        mqtt: the device's client.
        topic: the device's ``reported`` topic.
        device: the device id.
        agent_version: reported with every status.
        seq: the seq of the current desired state (0 when there is none).
        clock: the report's timestamp.
        stats: the device's counters.
    """

    def __init__(
        self,
        mqtt: MqttClient,
        topic: str,
        device: str,
        agent_version: str,
        seq: Callable[[], int],
        clock: Callable[[], datetime],
        stats: Counter[str],
    ) -> None:
        self._mqtt = mqtt
        self._topic = topic
        self._device = device
        self._agent_version = agent_version
        self._seq = seq
        self._clock = clock
        self._stats = stats
        self._lock = threading.Lock()  # the statuses and the coalescer
        self._status: dict[str, ModelStatus] = {}
        self._coalescer = ReportCoalescer()
        self._doc_error: tuple[str, str] | None = None
        self._reported_seq = -1

    def status(self) -> dict[str, ModelStatus]:
        """The current status of every model."""
        with self._lock:
            return dict(self._status)

    def restore(self, name: str, status: ModelStatus) -> None:
        """Set a status saved before a restart, without reporting it yet."""
        with self._lock:
            self._status[name] = status

    def set(self, name: str, status: ModelStatus) -> None:
        """Set a model's status; report when the coalescer says the change matters."""
        with self._lock:
            self._status[name] = status
            report = self._coalescer.should_report(name, status)
        if report:
            self.publish()

    def document_rejected(self, exc: VerificationError) -> None:
        """Report that a desired-state document was refused, and why."""
        self._doc_error = (reason_code(exc), str(exc)[:500])
        self.publish()

    def document_accepted(self) -> None:
        """A new desired state is current: the last refusal no longer applies."""
        self._doc_error = None

    def reconnected(self) -> None:
        """Report everything again after (re)connecting: the broker may have lost it."""
        with self._lock:
            self._coalescer.forget()
        self.publish()

    def acknowledge(self) -> None:
        """Report once for a desired seq not reported yet (one that changed nothing), so the
        server sees the device has it (a normal rollout already reported its steps)."""
        if self._reported_seq != self._seq():
            self.publish()

    def publish(self) -> None:
        """Publish the current report (retained)."""
        seq = self._seq()
        error = self._doc_error
        report = Reported(
            self._device,
            seq,
            format_time(self._clock()),
            self.status(),
            self._agent_version,
            error=error[1] if error else None,
            reason_code=error[0] if error else None,
        )
        self._reported_seq = seq
        try:
            self._mqtt.publish(self._topic, encode(report), retain=True)
            self._stats["published_reported"] += 1
        except (TransportError, ProtocolError) as exc:
            log.warning("fleet sync %s: report not sent: %s", self._device, exc)
