"""Fleet topics and names (MQTT 5.0 spec 4.7: topic levels, wildcards), and the protocol's
error. Part of :mod:`edgeserve.protocol`, which re-exports everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from edgeserve.errors import EdgeServeError

__all__ = [
    "PRESENCE_OFFLINE",
    "PRESENCE_ONLINE",
    "ProtocolError",
    "Topics",
    "check_id",
    "fleet_filter",
    "parse_topic",
    "topics",
]

PRESENCE_ONLINE: Final = b"online"
PRESENCE_OFFLINE: Final = b"offline"
_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KINDS: Final = ("desired", "reported", "telemetry", "presence")


class ProtocolError(EdgeServeError):
    """A message or topic that does not follow the protocol (the peer's fault)."""


@dataclass(frozen=True)
class Topics:
    """The four topics of one device."""

    desired: str
    reported: str
    telemetry: str
    presence: str


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid fleet, device or model name (one topic level).

    Raises:
        ProtocolError: empty, too long, or holds ``/``, ``+``, ``#`` or other characters.
    """
    # MQTT topic levels must not hold wildcards or separators (MQTT 5.0 spec 4.7.1)
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ProtocolError(f"{what} {value!r}: use 1-64 of A-Z a-z 0-9 _ . - (no / + #)")
    return value


def _check_prefix(prefix: str) -> str:
    if not prefix.endswith("/") or any(c in prefix for c in "+#\x00"):
        raise ProtocolError(f"topic prefix {prefix!r} must end with '/' and hold no wildcard")
    return prefix


def topics(prefix: str, fleet: str, device: str) -> Topics:
    """The topics of ``device`` in ``fleet``: ``<prefix><fleet>/dev/<device>/<kind>``.

    Raises:
        ProtocolError: a bad prefix, fleet or device name.
    """
    base = f"{_check_prefix(prefix)}{check_id(fleet, 'fleet')}/dev/{check_id(device, 'device')}"
    return Topics(*(f"{base}/{kind}" for kind in _KINDS))


def fleet_filter(prefix: str, fleet: str, kind: str) -> str:
    """The subscription filter for one kind of message from every device of a fleet.

    Raises:
        ProtocolError: unknown kind or bad names.
    """
    if kind not in _KINDS:
        raise ProtocolError(f"unknown topic kind {kind!r}")
    return f"{_check_prefix(prefix)}{check_id(fleet, 'fleet')}/dev/+/{kind}"


def parse_topic(prefix: str, topic: str) -> tuple[str, str, str]:
    """Split a device topic into ``(fleet, device, kind)``.

    Raises:
        ProtocolError: not a device topic under ``prefix``.
    """
    if not topic.startswith(prefix):
        raise ProtocolError(f"topic {topic!r} is not under {prefix!r}")
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 4 or parts[1] != "dev" or parts[3] not in _KINDS:
        raise ProtocolError(f"topic {topic!r} is not <fleet>/dev/<device>/<kind>")
    return check_id(parts[0], "fleet"), check_id(parts[2], "device"), parts[3]
