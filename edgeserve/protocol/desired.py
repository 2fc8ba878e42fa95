"""The desired state: what the fleet server wants a device to run (server to device).

A :class:`DesiredState` names, per model, a :class:`ModelTarget`: the version, its signed
release, the :class:`Artifact` to download, and optionally an A/B :class:`Split`. It travels
inside a fleet-key envelope; ``from_dict`` parses the envelope's signed object strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeserve.protocol.fields import (
    MAX_MODELS,
    SHA_RE,
    read_envelope,
    read_int,
    read_obj,
    read_opt_str,
    read_str,
)
from edgeserve.protocol.topics import ProtocolError, check_id

__all__ = ["Artifact", "DesiredState", "ModelTarget", "Split"]


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
        if not isinstance(self.sha256, str) or not SHA_RE.match(self.sha256):
            raise ProtocolError("artifact sha256 must be 64 lowercase hex digits")
        read_int(self.size, "artifact size", 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"url": self.url, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, value: Any, where: str = "artifact") -> Artifact:
        """Parse strictly. Raises ProtocolError."""
        keys = frozenset({"url", "sha256", "size"})
        obj = read_obj(value, where, keys, keys)
        return cls(read_str(obj["url"], f"{where}.url"), obj["sha256"], obj["size"])


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
        read_int(self.a_version, "split.a_version", 1)
        read_int(self.b_version, "split.b_version", 1)
        read_int(self.weight_b, "split.weight_b", 0, 100)
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
        obj = read_obj(value, where, keys, keys)
        return cls(
            obj["a_version"],
            obj["b_version"],
            obj["weight_b"],
            Artifact.from_dict(obj["b_artifact"], f"{where}.b_artifact"),
            read_envelope(obj["b_release"], f"{where}.b_release"),
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
        read_int(self.version, "version", 1)
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
        obj = read_obj(value, where, keys, frozenset({"version", "artifact", "release"}))
        split = obj.get("split")
        return cls(
            version=obj["version"],
            artifact=Artifact.from_dict(obj["artifact"], f"{where}.artifact"),
            release=read_envelope(obj["release"], f"{where}.release"),
            allow_downgrade=obj.get("allow_downgrade", False),
            split=None if split is None else Split.from_dict(split, f"{where}.split"),
            experiment=read_opt_str(obj.get("experiment"), f"{where}.experiment", 128),
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
        read_int(self.seq, "seq", 1)
        read_str(self.issued, "issued", 64)
        read_str(self.expires, "expires", 64)
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
        obj = read_obj(value, "desired", keys, required)
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
            keyrings=tuple(read_envelope(k, "desired.keyrings[]") for k in keyrings),
        )
