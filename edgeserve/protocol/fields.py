"""Bounds and strict field readers shared by every fleet message.

Each reader returns the value when it has the right type and range and raises
:class:`~edgeserve.protocol.topics.ProtocolError` naming where it was otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from edgeserve.protocol.topics import ProtocolError

__all__ = [
    "MAX_MODELS",
    "MAX_PAYLOAD_BYTES",
    "MAX_SUMMARIES",
    "SHA_RE",
    "read_envelope",
    "read_int",
    "read_obj",
    "read_opt_int",
    "read_opt_str",
    "read_str",
]

MAX_PAYLOAD_BYTES: Final = 262_144  # bytes per MQTT payload (256 KiB); MQTT allows 256 MiB
MAX_MODELS: Final = 64  # models per desired/reported document
MAX_SUMMARIES: Final = 1_000  # telemetry summaries per message
SHA_RE: Final = re.compile(r"^[0-9a-f]{64}$")


def read_obj(value: Any, where: str, keys: frozenset[str], required: frozenset[str]) -> Mapping:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{where}: must be an object")
    unknown = set(value) - keys
    if unknown:
        raise ProtocolError(f"{where}: unknown keys {sorted(unknown)}")
    missing = required - set(value)
    if missing:
        raise ProtocolError(f"{where}: missing {sorted(missing)}")
    return value


def read_int(value: Any, where: str, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ProtocolError(f"{where}: must be an integer in [{minimum}, {maximum}]")
    return value


def read_opt_int(value: Any, where: str, minimum: int = 1) -> int | None:
    return None if value is None else read_int(value, where, minimum)


def read_str(value: Any, where: str, max_len: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise ProtocolError(f"{where}: must be a string of at most {max_len} characters")
    return value


def read_opt_str(value: Any, where: str, max_len: int = 4096) -> str | None:
    return None if value is None else read_str(value, where, max_len)


def read_envelope(value: Any, where: str) -> dict[str, Any]:
    # shape only; the signature is checked by edgeserve.trust.verify_release
    if not isinstance(value, dict) or set(value) != {"signed", "signatures"}:
        raise ProtocolError(f"{where}: must be a signed envelope")
    return value
