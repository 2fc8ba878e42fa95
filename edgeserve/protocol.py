"""The fleet wire protocol, sans I/O: topics, messages, the install state machine, report
coalescing. Plain data and functions, no paho import (after h11's ``_events.py``/``_state.py``);
:mod:`edgeserve.mqtt` moves the bytes.

Topics (prefix configurable, default ``es/``)::

    es/<fleet>/dev/<device>/desired     retained, QoS 1: fleet-signed DesiredState envelope
    es/<fleet>/dev/<device>/reported    retained, QoS 1: Reported (what the device runs)
    es/<fleet>/dev/<device>/telemetry   QoS 1: Telemetry summaries
    es/<fleet>/dev/<device>/presence    retained: "online" / Last Will "offline"

Every payload is bounded by :data:`MAX_PAYLOAD_BYTES` and parsed strictly: unknown keys, wrong
types or out-of-range values raise :class:`ProtocolError`, and the receiver drops (and counts)
the message. The desired document travels inside a fleet-key envelope
(:func:`edgeserve.trust.verify_document` with kind ``"desired"``); :meth:`DesiredState.from_dict`
parses its signed object.

The code lives in ``protocol_topics`` (names, topics, :class:`ProtocolError`),
``protocol_states`` (the install transition table) and ``protocol_messages`` (the messages);
this module re-exports them and holds the report coalescing policy.
"""

from __future__ import annotations

from edgeserve.protocol_messages import (
    MAX_MODELS,
    MAX_PAYLOAD_BYTES,
    MAX_SUMMARIES,
    Artifact,
    DesiredState,
    ModelStatus,
    ModelTarget,
    Reported,
    Split,
    Telemetry,
    decode,
    encode,
)
from edgeserve.protocol_states import (
    TRANSITIONS,
    IllegalTransitionError,
    InstallEvent,
    InstallMachine,
    InstallState,
)
from edgeserve.protocol_topics import (
    PRESENCE_OFFLINE,
    PRESENCE_ONLINE,
    ProtocolError,
    Topics,
    fleet_filter,
    parse_topic,
    topics,
)

__all__ = [
    "MAX_MODELS",
    "MAX_PAYLOAD_BYTES",
    "MAX_SUMMARIES",
    "PRESENCE_OFFLINE",
    "PRESENCE_ONLINE",
    "TRANSITIONS",
    "Artifact",
    "DesiredState",
    "IllegalTransitionError",
    "InstallEvent",
    "InstallMachine",
    "InstallState",
    "ModelStatus",
    "ModelTarget",
    "ProtocolError",
    "ReportCoalescer",
    "Reported",
    "Split",
    "Telemetry",
    "Topics",
    "decode",
    "encode",
    "fleet_filter",
    "parse_topic",
    "topics",
]


class ReportCoalescer:
    """Decides which status changes are worth a message (budget: <= 6 messages per device per
    rollout, desired included).

    Rules: a terminal state is reported when it differs from the last reported status of that
    model (the free-text ``error`` aside, so retries failing for the same reason stay
    silent); an in-progress state (DOWNLOADING ... WARMING) is reported once per target
    version, so the server learns the device started.
    """

    def __init__(self) -> None:
        self._last: dict[str, ModelStatus] = {}
        self._progress_sent: dict[str, int | None] = {}

    def should_report(self, name: str, status: ModelStatus) -> bool:
        """Whether ``status`` of model ``name`` deserves a report now; records it if so."""
        last = self._last.get(name)
        if status.state.terminal:
            if last is not None and _key(last) == _key(status):
                return False
        else:
            if self._progress_sent.get(name, -1) == status.target:
                return False
            self._progress_sent[name] = status.target
        self._last[name] = status
        return True

    def forget(self) -> None:
        """After a reconnect: report everything afresh."""
        self._last.clear()
        self._progress_sent.clear()


def _key(status: ModelStatus) -> tuple[object, ...]:
    return (status.state, status.active, status.target, status.previous, status.reason_code)
