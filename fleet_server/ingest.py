"""Turn inbound MQTT messages into store rows. Pure parsing plus one batched write.

Every payload is bounded and parsed strictly (:func:`edgeserve.protocol.decode`); anything
malformed, oversized, from an unknown device, or whose body names another device than its topic
is dropped and counted by reason — never raised into the MQTT network thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeserve.protocol import (
    PRESENCE_OFFLINE,
    PRESENCE_ONLINE,
    InstallState,
    ProtocolError,
    Reported,
    Telemetry,
    decode,
    parse_topic,
)

from .store import Store

__all__ = [
    "Batch",
    "IngestCounters",
    "devices_of",
    "newer_report",
    "parse_batch",
    "report_order",
    "store_batch",
    "summary_row",
]

log = logging.getLogger(__name__)


@dataclass
class IngestCounters:
    """What came in and what was dropped, by reason (served at ``/api/v1/stats``)."""

    received: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    windows: int = 0  # telemetry windows ingested
    lag_s: float = 0.0  # newest batch: largest delay from a window's end to its ingestion
    stale_reports: int = 0  # reported documents older than the stored one, not recorded

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "received": dict(self.received),
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "stale_reports": self.stale_reports,
        }


@dataclass
class Batch:
    """The parsed content of a batch of messages, ready for the store."""

    presence: list[tuple[str, str, float]] = field(default_factory=list)
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)
    telemetry: list[tuple[Any, ...]] = field(default_factory=list)
    lag_s: float | None = None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def summary_row(device: str, s: Mapping[str, Any], fallback_ts: float) -> tuple[Any, ...]:
    """One telemetry summary -> ``(device, model, version, window_ts, count, errors, p50, p95,
    p99, experiment)``.

    Accepted keys (the agent's ``kind: summary`` record and simpler forms): ``model``,
    ``version``, ``requests`` (or ``count``), ``error_count`` (or ``errors``, an integer or a
    per-reason mapping, or ``failures``), a window start ``window_start``/``window_ts``/``ts``
    (UNIX seconds), latencies either as ``latency_ms: {p50, p95, p99}`` or
    ``p50_ms``/``p95_ms``/``p99_ms``, and ``experiment``, the label of the on-device split the
    window was counted under.

    Raises:
        ProtocolError: a required field is missing or has the wrong type.
    """
    model, version = s.get("model"), s.get("version")
    count = s.get("count", s.get("requests"))
    errors = s.get("error_count", s.get("errors", s.get("failures", 0)))
    if isinstance(errors, Mapping):  # the agent's per-reason counts
        errors = sum(v for v in errors.values() if isinstance(v, int))
    if not isinstance(model, str) or isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError("telemetry summary: needs a string model and an integer version")
    if not isinstance(count, int) or not isinstance(errors, int) or count < 0 or errors < 0:
        raise ProtocolError("telemetry summary: count and errors must be integers >= 0")
    lat = s.get("latency_ms")
    lat = lat if isinstance(lat, Mapping) else {}
    p = [_num(lat.get(k, s.get(f"{k}_ms"))) for k in ("p50", "p95", "p99")]
    ts = None
    for key in ("window_start", "window_ts", "ts", "start"):
        ts = _num(s.get(key))
        if ts is not None:
            break
    label = s.get("experiment")
    if label is not None and (not isinstance(label, str) or len(label) > 128):
        raise ProtocolError("telemetry summary: experiment must be a string of <= 128 chars")
    ts = ts if ts is not None else fallback_ts
    return (device, model, version, ts, count, errors, *p, label)


def parse_batch(
    messages: Sequence[tuple[str, bytes]],
    prefix: str,
    known: set[str],
    counters: IngestCounters,
    max_payload_bytes: int,
) -> Batch:
    """Parse ``(topic, payload)`` messages; drop and count the bad ones.

    Args:
        messages: in arrival order.
        prefix: topic prefix with its trailing ``/``.
        known: registered device ids.
        counters: updated in place.
        max_payload_bytes: the bound above which a message is dropped unread.
    """
    batch = Batch()
    now = time.time()
    for topic, payload in messages:
        try:
            _fleet, device, kind = parse_topic(prefix, topic)
        except ProtocolError:
            counters.dropped["bad_topic"] += 1
            continue
        counters.received[kind] += 1
        if device not in known:
            counters.dropped["unknown_device"] += 1
            continue
        if len(payload) > max_payload_bytes:
            counters.dropped["oversize"] += 1
            continue
        try:
            if kind == "presence":
                if payload not in (PRESENCE_ONLINE, PRESENCE_OFFLINE):
                    raise ProtocolError(f"presence must be online or offline, not {payload[:20]!r}")
                batch.presence.append((device, payload.decode(), now))
            elif kind == "reported":
                if not payload:  # a cleared retained message (MQTT 5.0 §3.3.1.3)
                    continue
                rep = decode(payload, Reported)
                if rep.device != device:
                    raise ProtocolError(f"reported for {rep.device!r} on {device!r}'s topic")
                doc = rep.to_dict()
                if device not in batch.reported or newer_report(doc, batch.reported[device]):
                    batch.reported[device] = doc
            elif kind == "telemetry":
                tel = decode(payload, Telemetry)
                if tel.device != device:
                    raise ProtocolError(f"telemetry for {tel.device!r} on {device!r}'s topic")
                batch.telemetry.extend(summary_row(device, s, now) for s in tel.summaries)
                ends = [_num(s.get("window_end")) for s in tel.summaries]
                lags = [now - e for e in ends if e is not None]
                if lags:
                    batch.lag_s = max([*lags, batch.lag_s or 0.0])
            # our own desired messages come back on no subscription of ours; ignore others
        except ProtocolError as exc:
            counters.dropped["malformed"] += 1
            log.info("dropped %s from %s: %s", kind, device, exc)
    return batch


def report_order(doc: Mapping[str, Any]) -> tuple[int, str, int]:
    """How recent a reported document is, as the device sent it: the desired ``seq`` it has
    seen, then its ``ts`` (UTC, ``YYYY-MM-DDTHH:MM:SSZ``, so text order is time order), then
    how many of its models are in a terminal install state (within one second, a device
    reports ``DOWNLOADING`` before ``ACTIVE``, never after)."""
    done = 0
    for status in (doc.get("models") or {}).values():
        try:
            done += InstallState(str((status or {}).get("state"))).terminal
        except ValueError:
            continue
    seq = doc.get("seq")
    return (seq if isinstance(seq, int) else 0, str(doc.get("ts") or ""), done)


def newer_report(new: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Whether ``new`` replaces ``stored`` (a tie replaces: the later arrival wins)."""
    return report_order(new) >= report_order(stored)


def devices_of(messages: Sequence[tuple[str, bytes]], prefix: str) -> set[str]:
    """The device ids named by the topics of ``messages`` (bad topics skipped)."""
    found = set()
    for topic, _payload in messages:
        try:
            found.add(parse_topic(prefix, topic)[1])
        except ProtocolError:
            continue
    return found


def store_batch(store: Store, batch: Batch) -> list[tuple[str, Mapping[str, Any]]]:
    """Write a parsed batch in one transaction (the caller's, if it holds one); return the
    reported documents recorded (those not older than what the store had)."""
    now = time.time()
    with store.transaction():
        store.set_presence(batch.presence)
        accepted = store.set_reported(
            [(d, doc, now) for d, doc in batch.reported.items()], newer_report
        )
        store.add_telemetry(batch.telemetry)
    return accepted
