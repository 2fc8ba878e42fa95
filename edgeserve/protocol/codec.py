"""Messages to and from payload bytes: canonical JSON, bounded by ``MAX_PAYLOAD_BYTES``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edgeserve.bundle.manifest import canonical_json
from edgeserve.protocol.desired import DesiredState
from edgeserve.protocol.fields import MAX_PAYLOAD_BYTES
from edgeserve.protocol.reports import Reported, Telemetry
from edgeserve.protocol.topics import ProtocolError

__all__ = ["decode", "encode"]


def encode(message: Reported | Telemetry | DesiredState | Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes of a message (or of an envelope mapping).

    Raises:
        ProtocolError: over :data:`MAX_PAYLOAD_BYTES`.
    """
    obj = message if isinstance(message, Mapping) else message.to_dict()
    data = canonical_json(obj)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes is over {MAX_PAYLOAD_BYTES}")
    return data


def decode(payload: bytes, kind: type[Reported] | type[Telemetry]) -> Reported | Telemetry:
    """Parse a reported or telemetry payload, bounded and strict.

    Raises:
        ProtocolError: too large, not JSON, or not the message.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"payload is not JSON ({exc})") from exc
    return kind.from_dict(obj)
