"""What a device tells the server: its reported state and its telemetry (device to server).

:class:`Reported` carries one :class:`ModelStatus` per model (install state, active, target
and previous versions, the reason of a failure); :class:`Telemetry` carries bounded metric
summaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeserve.protocol.fields import (
    MAX_MODELS,
    MAX_SUMMARIES,
    read_int,
    read_obj,
    read_opt_int,
    read_opt_str,
    read_str,
)
from edgeserve.protocol.states import InstallState
from edgeserve.protocol.topics import ProtocolError, check_id

__all__ = ["ModelStatus", "Reported", "Telemetry"]


@dataclass(frozen=True)
class ModelStatus:
    """One model's status in a report.

    Attributes:
        state: the install state.
        active: the version serving now (None before the first install).
        target: the version the last desired state asked for.
        previous: the version that served before ``active`` (for rollback).
        error: a one-line human message for FAILED / REJECTED / ROLLED_BACK.
        reason_code: a stable short code (``digest_mismatch``, ``health_check``, ...).
    """

    state: InstallState
    active: int | None = None
    target: int | None = None
    previous: int | None = None
    error: str | None = None
    reason_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "state": self.state.value,
            "active": self.active,
            "target": self.target,
            "previous": self.previous,
            "error": self.error,
            "reason_code": self.reason_code,
        }

    @classmethod
    def from_dict(cls, value: Any, where: str = "status") -> ModelStatus:
        """Parse strictly. Raises ProtocolError."""
        keys = frozenset({"state", "active", "target", "previous", "error", "reason_code"})
        obj = read_obj(value, where, keys, frozenset({"state"}))
        try:
            state = InstallState(obj["state"])
        except ValueError:
            raise ProtocolError(f"{where}.state: unknown state {obj['state']!r}") from None
        return cls(
            state=state,
            active=read_opt_int(obj.get("active"), f"{where}.active"),
            target=read_opt_int(obj.get("target"), f"{where}.target"),
            previous=read_opt_int(obj.get("previous"), f"{where}.previous"),
            error=read_opt_str(obj.get("error"), f"{where}.error", 1024),
            reason_code=read_opt_str(obj.get("reason_code"), f"{where}.reason_code", 64),
        )


@dataclass(frozen=True)
class Reported:
    """What a device runs: one status per model, and the desired ``seq`` it has seen."""

    device: str
    seq: int
    ts: str
    models: Mapping[str, ModelStatus] = field(default_factory=dict)
    agent_version: str = ""
    error: str | None = None  # why the last desired document was rejected (not per model)
    reason_code: str | None = None  # e.g. "bad_signature", "expired", "replay"

    def __post_init__(self) -> None:
        check_id(self.device, "device")
        read_int(self.seq, "seq", 0)
        if len(self.models) > MAX_MODELS:
            raise ProtocolError(f"reported: more than {MAX_MODELS} models")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": "reported",
            "device": self.device,
            "seq": self.seq,
            "ts": self.ts,
            "models": {n: s.to_dict() for n, s in sorted(self.models.items())},
            "agent_version": self.agent_version,
            "error": self.error,
            "reason_code": self.reason_code,
        }

    @classmethod
    def from_dict(cls, value: Any) -> Reported:
        """Parse strictly. Raises ProtocolError."""
        keys = frozenset(
            {"kind", "device", "seq", "ts", "models", "agent_version", "error", "reason_code"}
        )
        obj = read_obj(value, "reported", keys, keys - {"agent_version", "error", "reason_code"})
        if obj["kind"] != "reported" or not isinstance(obj["models"], Mapping):
            raise ProtocolError("reported: wrong kind or models")
        return cls(
            device=obj["device"],
            seq=obj["seq"],
            ts=read_str(obj["ts"], "reported.ts", 64),
            models={
                check_id(n, "model name"): ModelStatus.from_dict(s, f"reported.models.{n}")
                for n, s in obj["models"].items()
            },
            agent_version=read_str(obj.get("agent_version", ""), "agent_version", 64),
            error=read_opt_str(obj.get("error"), "reported.error", 1024),
            reason_code=read_opt_str(obj.get("reason_code"), "reported.reason_code", 64),
        )


@dataclass(frozen=True)
class Telemetry:
    """A batch of telemetry summaries (the agent's ``TelemetryBuffer`` records)."""

    device: str
    ts: str
    summaries: tuple[dict[str, Any], ...] = ()
    dropped: int = 0  # records lost to the buffer bound since the agent started

    def __post_init__(self) -> None:
        check_id(self.device, "device")
        read_int(self.dropped, "dropped", 0)
        if len(self.summaries) > MAX_SUMMARIES:
            raise ProtocolError(f"telemetry: more than {MAX_SUMMARIES} summaries")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": "telemetry",
            "device": self.device,
            "ts": self.ts,
            "summaries": list(self.summaries),
            "dropped": self.dropped,
        }

    @classmethod
    def from_dict(cls, value: Any) -> Telemetry:
        """Parse strictly. Raises ProtocolError."""
        keys = frozenset({"kind", "device", "ts", "summaries", "dropped"})
        obj = read_obj(value, "telemetry", keys, keys)
        summaries = obj["summaries"]
        if obj["kind"] != "telemetry" or not isinstance(summaries, list):
            raise ProtocolError("telemetry: wrong kind or summaries")
        if not all(isinstance(s, dict) for s in summaries):
            raise ProtocolError("telemetry.summaries: each must be an object")
        return cls(
            obj["device"], read_str(obj["ts"], "telemetry.ts", 64), tuple(summaries), obj["dropped"]
        )
