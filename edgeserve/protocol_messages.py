"""Fleet messages as frozen dataclasses with strict, bounded parsing (after h11's
``_events.py``). Part of :mod:`edgeserve.protocol`, which re-exports everything.

Every ``from_dict`` rejects unknown keys, wrong types and out-of-range values with
:class:`~edgeserve.protocol_topics.ProtocolError`; every payload is bounded by
:data:`MAX_PAYLOAD_BYTES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edgeserve.manifest import canonical_json
from edgeserve.protocol_states import InstallState
from edgeserve.protocol_topics import ProtocolError, check_id

__all__ = [
    "MAX_MODELS",
    "MAX_PAYLOAD_BYTES",
    "MAX_SUMMARIES",
    "Artifact",
    "DesiredState",
    "ModelStatus",
    "ModelTarget",
    "Reported",
    "Split",
    "Telemetry",
    "decode",
    "encode",
]

MAX_PAYLOAD_BYTES: Final = 262_144  # bytes per MQTT payload (256 KiB); MQTT allows 256 MiB
MAX_MODELS: Final = 64  # models per desired/reported document
MAX_SUMMARIES: Final = 1_000  # telemetry summaries per message
_SHA_RE: Final = re.compile(r"^[0-9a-f]{64}$")


def _obj(value: Any, where: str, keys: frozenset[str], required: frozenset[str]) -> Mapping:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{where}: must be an object")
    unknown = set(value) - keys
    if unknown:
        raise ProtocolError(f"{where}: unknown keys {sorted(unknown)}")
    missing = required - set(value)
    if missing:
        raise ProtocolError(f"{where}: missing {sorted(missing)}")
    return value


def _int(value: Any, where: str, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ProtocolError(f"{where}: must be an integer in [{minimum}, {maximum}]")
    return value


def _opt_int(value: Any, where: str, minimum: int = 1) -> int | None:
    return None if value is None else _int(value, where, minimum)


def _str(value: Any, where: str, max_len: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise ProtocolError(f"{where}: must be a string of at most {max_len} characters")
    return value


def _opt_str(value: Any, where: str, max_len: int = 4096) -> str | None:
    return None if value is None else _str(value, where, max_len)


def _envelope(value: Any, where: str) -> dict[str, Any]:
    # shape only; the signature is checked by edgeserve.trust.verify_release
    if not isinstance(value, dict) or set(value) != {"signed", "signatures"}:
        raise ProtocolError(f"{where}: must be a signed envelope")
    return value


# --------------------------------------------------------------------------- desired state


@dataclass(frozen=True)
class Artifact:
    """Where a bundle ``.tar`` is and what it must hash to.

    ``url`` is absolute (``http(s)://``) or a path (``/artifacts/...``) that the device
    resolves against its configured fleet ``server_url``.
    """

    url: str
    sha256: str
    size: int  # bytes; the download is cut off past it

    def __post_init__(self) -> None:
        if (
            not isinstance(self.url, str)
            or len(self.url) > 2048
            or not self.url.startswith(("http://", "https://", "/"))
            or self.url.startswith("//")
        ):
            raise ProtocolError(f"artifact url {self.url!r} must be http(s):// or a /path")
        if not isinstance(self.sha256, str) or not _SHA_RE.match(self.sha256):
            raise ProtocolError("artifact sha256 must be 64 lowercase hex digits")
        _int(self.size, "artifact size", 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"url": self.url, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, value: Any, where: str = "artifact") -> Artifact:
        """Parse strictly. Raises ProtocolError."""
        keys = frozenset({"url", "sha256", "size"})
        obj = _obj(value, where, keys, keys)
        return cls(_str(obj["url"], f"{where}.url"), obj["sha256"], obj["size"])


@dataclass(frozen=True)
class Split:
    """On-device A/B: serve the model alias from ``a_version`` and ``b_version``, sending
    ``weight_b`` percent of requests to B. B's bundle comes with its own artifact and release."""

    a_version: int
    b_version: int
    weight_b: int
    b_artifact: Artifact
    b_release: dict[str, Any]

    def __post_init__(self) -> None:
        _int(self.a_version, "split.a_version", 1)
        _int(self.b_version, "split.b_version", 1)
        _int(self.weight_b, "split.weight_b", 0, 100)
        if self.a_version == self.b_version:
            raise ProtocolError("split: a_version and b_version must differ")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "a_version": self.a_version,
            "b_version": self.b_version,
            "weight_b": self.weight_b,
            "b_artifact": self.b_artifact.to_dict(),
            "b_release": self.b_release,
        }

    @classmethod
    def from_dict(cls, value: Any, where: str = "split") -> Split:
        """Parse strictly. Raises ProtocolError."""
        keys = frozenset({"a_version", "b_version", "weight_b", "b_artifact", "b_release"})
        obj = _obj(value, where, keys, keys)
        return cls(
            obj["a_version"],
            obj["b_version"],
            obj["weight_b"],
            Artifact.from_dict(obj["b_artifact"], f"{where}.b_artifact"),
            _envelope(obj["b_release"], f"{where}.b_release"),
        )


@dataclass(frozen=True)
class ModelTarget:
    """What one model should run.

    Attributes:
        version: the version to activate (arm A when ``split`` is set).
        artifact: the bundle ``.tar`` of ``version``.
        release: the release envelope (``signature.json``) of ``version``.
        allow_downgrade: the operator allows a version lower than the installed one (rollback).
        split: optional on-device A/B split.
        experiment: id of the experiment this target belongs to, for telemetry labels.
    """

    version: int
    artifact: Artifact
    release: dict[str, Any]
    allow_downgrade: bool = False
    split: Split | None = None
    experiment: str | None = None

    def __post_init__(self) -> None:
        _int(self.version, "version", 1)
        if not isinstance(self.allow_downgrade, bool):
            raise ProtocolError("allow_downgrade must be a boolean")
        if self.split is not None and self.split.a_version != self.version:
            raise ProtocolError("split.a_version must equal the target version")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "version": self.version,
            "artifact": self.artifact.to_dict(),
            "release": self.release,
            "allow_downgrade": self.allow_downgrade,
            "split": None if self.split is None else self.split.to_dict(),
            "experiment": self.experiment,
        }

    @classmethod
    def from_dict(cls, value: Any, where: str = "target") -> ModelTarget:
        """Parse strictly. Raises ProtocolError."""
        keys = frozenset(
            {"version", "artifact", "release", "allow_downgrade", "split", "experiment"}
        )
        obj = _obj(value, where, keys, frozenset({"version", "artifact", "release"}))
        split = obj.get("split")
        return cls(
            version=obj["version"],
            artifact=Artifact.from_dict(obj["artifact"], f"{where}.artifact"),
            release=_envelope(obj["release"], f"{where}.release"),
            allow_downgrade=obj.get("allow_downgrade", False),
            split=None if split is None else Split.from_dict(split, f"{where}.split"),
            experiment=_opt_str(obj.get("experiment"), f"{where}.experiment", 128),
        )


@dataclass(frozen=True)
class DesiredState:
    """The fleet server's wish for one device (the signed object of the desired envelope).

    Attributes:
        fleet / device: whom it is for (a device refuses another device's document).
        seq: monotonic per device; a device ignores a seq not above the last one applied.
        issued / expires: ISO 8601 UTC; expiry defeats a replayed stale document.
        models: model name -> target. Models not listed are left as they are.
        keyrings: keyring envelopes (oldest first) for devices to walk on rotation.
    """

    fleet: str
    device: str
    seq: int
    issued: str
    expires: str
    models: Mapping[str, ModelTarget] = field(default_factory=dict)
    keyrings: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_id(self.fleet, "fleet")
        check_id(self.device, "device")
        _int(self.seq, "seq", 1)
        _str(self.issued, "issued", 64)
        _str(self.expires, "expires", 64)
        if len(self.models) > MAX_MODELS:
            raise ProtocolError(f"desired: more than {MAX_MODELS} models")
        for name in self.models:
            check_id(name, "model name")

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with ``kind: desired`` (what gets signed)."""
        return {
            "kind": "desired",
            "fleet": self.fleet,
            "device": self.device,
            "seq": self.seq,
            "issued": self.issued,
            "expires": self.expires,
            "models": {name: t.to_dict() for name, t in sorted(self.models.items())},
            "keyrings": list(self.keyrings),
        }

    @classmethod
    def from_dict(cls, value: Any) -> DesiredState:
        """Parse strictly. Raises ProtocolError."""
        keys = frozenset(
            {"kind", "fleet", "device", "seq", "issued", "expires", "models", "keyrings"}
        )
        required = frozenset({"kind", "fleet", "device", "seq", "issued", "expires", "models"})
        obj = _obj(value, "desired", keys, required)
        if obj["kind"] != "desired":
            raise ProtocolError(f"desired: kind is {obj['kind']!r}")
        models = obj["models"]
        if not isinstance(models, Mapping):
            raise ProtocolError("desired.models: must be an object")
        keyrings = obj.get("keyrings", [])
        if not isinstance(keyrings, list) or len(keyrings) > 64:
            raise ProtocolError("desired.keyrings: must be a list of at most 64 envelopes")
        return cls(
            fleet=obj["fleet"],
            device=obj["device"],
            seq=obj["seq"],
            issued=obj["issued"],
            expires=obj["expires"],
            models={
                check_id(n, "model name"): ModelTarget.from_dict(t, f"desired.models.{n}")
                for n, t in models.items()
            },
            keyrings=tuple(_envelope(k, "desired.keyrings[]") for k in keyrings),
        )


# --------------------------------------------------------------------------- reported


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
        obj = _obj(value, where, keys, frozenset({"state"}))
        try:
            state = InstallState(obj["state"])
        except ValueError:
            raise ProtocolError(f"{where}.state: unknown state {obj['state']!r}") from None
        return cls(
            state=state,
            active=_opt_int(obj.get("active"), f"{where}.active"),
            target=_opt_int(obj.get("target"), f"{where}.target"),
            previous=_opt_int(obj.get("previous"), f"{where}.previous"),
            error=_opt_str(obj.get("error"), f"{where}.error", 1024),
            reason_code=_opt_str(obj.get("reason_code"), f"{where}.reason_code", 64),
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
        _int(self.seq, "seq", 0)
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
        obj = _obj(value, "reported", keys, keys - {"agent_version", "error", "reason_code"})
        if obj["kind"] != "reported" or not isinstance(obj["models"], Mapping):
            raise ProtocolError("reported: wrong kind or models")
        return cls(
            device=obj["device"],
            seq=obj["seq"],
            ts=_str(obj["ts"], "reported.ts", 64),
            models={
                check_id(n, "model name"): ModelStatus.from_dict(s, f"reported.models.{n}")
                for n, s in obj["models"].items()
            },
            agent_version=_str(obj.get("agent_version", ""), "agent_version", 64),
            error=_opt_str(obj.get("error"), "reported.error", 1024),
            reason_code=_opt_str(obj.get("reason_code"), "reported.reason_code", 64),
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
        _int(self.dropped, "dropped", 0)
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
        obj = _obj(value, "telemetry", keys, keys)
        summaries = obj["summaries"]
        if obj["kind"] != "telemetry" or not isinstance(summaries, list):
            raise ProtocolError("telemetry: wrong kind or summaries")
        if not all(isinstance(s, dict) for s in summaries):
            raise ProtocolError("telemetry.summaries: each must be an object")
        return cls(
            obj["device"], _str(obj["ts"], "telemetry.ts", 64), tuple(summaries), obj["dropped"]
        )


# --------------------------------------------------------------------------- bytes


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
