"""The fleet wire protocol, sans I/O: topics, messages, the install state machine, report
coalescing. Plain data and functions, no paho import; :mod:`edgeserve.mqtt` moves the bytes.

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

Modules, in the order a release reaches a device and its outcome comes back:

- ``topics``: topic names per fleet and device, id rules, :class:`ProtocolError`.
- ``fields``: payload bounds and the strict field readers every message uses.
- ``desired``: :class:`DesiredState` and its parts (server to device).
- ``tracker``: :class:`~edgeserve.protocol.tracker.DesiredTracker`, the device's decision on
  each desired document (accepted, duplicate or rejected: keyring chain, signature, device,
  expiry, seq), before anything is persisted.
- ``states``: the install state machine, one transition table keyed by (state, event).
- ``reports``: :class:`Reported` and :class:`Telemetry` (device to server).
- ``codec``: messages to and from bounded canonical-JSON bytes.
- ``coalescer``: :class:`ReportCoalescer`, which status changes deserve a report.

This ``__init__`` only re-exports the public API.
"""

from __future__ import annotations

from edgeserve.protocol.coalescer import ReportCoalescer
from edgeserve.protocol.codec import decode, encode
from edgeserve.protocol.desired import Artifact, DesiredState, ModelTarget, Split
from edgeserve.protocol.fields import MAX_MODELS, MAX_PAYLOAD_BYTES, MAX_SUMMARIES
from edgeserve.protocol.reports import ModelStatus, Reported, Telemetry
from edgeserve.protocol.states import (
    TRANSITIONS,
    IllegalTransitionError,
    InstallEvent,
    InstallMachine,
    InstallState,
)
from edgeserve.protocol.topics import (
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
