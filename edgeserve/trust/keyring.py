"""The keyring: which keys may sign releases and desired state, signed by the root keys.

JSON form of the signed object (``keyring.json`` holds it inside an envelope)::

    {"kind": "keyring", "version": 3, "expires": "2027-01-01T00:00:00Z",
     "root":    {"keys": {keyid: pub_b64}, "threshold": 1},
     "release": {"keys": {keyid: pub_b64}, "threshold": 1},
     "fleet":   {"keys": {keyid: pub_b64}, "threshold": 1}}

A device pins a :class:`TrustAnchor` (the first root keys) at install. Rotation follows TUF's
root update (specification 5.3.4-5.3.5): keyring N+1 is accepted only when signed by a threshold
of keyring N's root keys *and* a threshold of its own root keys, and its version is higher.
Expiry is checked on the newest keyring only (5.3.10), allowing ``clock_slack_s`` for devices
without a real-time clock.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

from edgeserve.bundle.manifest import canonical_json
from edgeserve.errors import ConfigError
from edgeserve.fsutil import write_atomic
from edgeserve.trust.errors import (
    ExpiredError,
    MalformedEnvelopeError,
    RollbackError,
)
from edgeserve.trust.keys import SigningKey, keyid_of, parse_envelope, sign, verify_envelope

__all__ = [
    "KEYRING_MAX_BYTES",
    "Keyring",
    "TrustAnchor",
    "check_expiry",
    "format_time",
    "make_keyring",
    "parse_time",
    "sign_keyring",
    "update_keyring",
    "verify_keyring",
]

KEYRING_MAX_BYTES: Final = 262_144  # bytes
_MAX_KEYS_PER_ROLE: Final = 16
_ISO_RE: Final = re.compile(
    # fractions of 3 or 6 digits only: what datetime.fromisoformat accepts on Python 3.10
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?(Z|[+-]\d{2}:\d{2})$"
)

KeyLike = SigningKey | str


def parse_time(value: str, what: str = "time") -> datetime:
    """Parse an ISO 8601 timestamp with a zone (``...Z`` or ``+00:00``) to an aware datetime.

    Raises:
        MalformedEnvelopeError: not such a timestamp.
    """
    if not isinstance(value, str) or not _ISO_RE.match(value):
        raise MalformedEnvelopeError(f"{what}: {value!r} is not an ISO 8601 UTC time")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: datetime) -> str:
    """An aware datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_expiry(expires: str, now: datetime, clock_slack_s: float, what: str) -> None:
    """Raise :class:`ExpiredError` when ``now`` is past ``expires`` plus the slack.

    Args:
        expires: ISO 8601 expiry.
        now: the reference time (aware).
        clock_slack_s: seconds of tolerated clock error (devices without RTC).
        what: named in the message.

    Raises:
        ExpiredError: expired.
        MalformedEnvelopeError: ``expires`` is not a timestamp.
    """
    if now.tzinfo is None:
        raise ConfigError("reference time must be timezone-aware")
    deadline = parse_time(expires, f"{what} expires") + timedelta(seconds=clock_slack_s)
    if now > deadline:
        raise ExpiredError(f"{what} expired at {expires} (now {format_time(now)})")


def _pub(key: KeyLike) -> str:
    return key.public_key_b64 if isinstance(key, SigningKey) else key


def _role_keys(keys: Sequence[KeyLike]) -> dict[str, str]:
    return {keyid_of(_pub(k)): _pub(k) for k in keys}


@dataclass(frozen=True)
class TrustAnchor:
    """The root keys a device pins at install (``root.json``)."""

    root_keys: Mapping[str, str]
    root_threshold: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": "trust-anchor",
            "root_keys": dict(self.root_keys),
            "root_threshold": self.root_threshold,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``root.json`` atomically."""
        return write_atomic(Path(path), canonical_json(self.to_dict()) + b"\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrustAnchor:
        """Read ``root.json``.

        Raises:
            ConfigError: missing or malformed.
        """
        source = Path(path)
        try:
            obj = json.loads(source.read_bytes()[:KEYRING_MAX_BYTES])
            keys = obj["root_keys"]
            threshold = obj["root_threshold"]
            if obj.get("kind") != "trust-anchor" or not isinstance(keys, dict):
                raise ValueError("not a trust anchor")
            for kid, pub in keys.items():
                if keyid_of(pub) != kid:
                    raise ValueError(f"key id {kid[:12]} does not match its key")
            if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
                raise ValueError("bad root_threshold")
        except OSError as exc:
            raise ConfigError(f"cannot read trust anchor {source}: {exc.strerror}") from exc
        except (ValueError, KeyError, TypeError, MalformedEnvelopeError) as exc:
            raise ConfigError(f"{source}: not a valid trust anchor ({exc})") from exc
        return cls(dict(keys), threshold)


@dataclass(frozen=True)
class Keyring:
    """A verified (or about-to-be-signed) keyring. See the module docstring for the JSON form.

    Attributes:
        version: monotonic, starts at 1.
        expires: ISO 8601 UTC.
        threshold: release signatures needed per manifest.
        root_keys / root_threshold: who signs the next keyring.
        release_keys: who signs manifests.
        fleet_keys / fleet_threshold: who signs desired-state documents.
    """

    version: int
    expires: str
    threshold: int
    root_keys: Mapping[str, str]
    root_threshold: int
    release_keys: Mapping[str, str]
    fleet_keys: Mapping[str, str] = field(default_factory=dict)
    fleet_threshold: int = 1

    def __post_init__(self) -> None:
        for name in ("version", "threshold", "root_threshold", "fleet_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MalformedEnvelopeError(f"keyring: {name} must be a positive integer")
        parse_time(self.expires, "keyring expires")
        for role, keys, threshold in (
            ("root", self.root_keys, self.root_threshold),
            ("release", self.release_keys, self.threshold),
            ("fleet", self.fleet_keys, self.fleet_threshold if self.fleet_keys else 0),
        ):
            if not isinstance(keys, Mapping) or len(keys) > _MAX_KEYS_PER_ROLE:
                raise MalformedEnvelopeError(f"keyring: {role} keys must be a small mapping")
            if len(keys) < threshold:
                raise MalformedEnvelopeError(
                    f"keyring: {role} threshold {threshold} exceeds its {len(keys)} key(s)"
                )
            for kid, pub in keys.items():
                if not isinstance(pub, str) or keyid_of(pub) != kid:
                    raise MalformedEnvelopeError(f"keyring: {role} key id {kid!r} is not its key")

    @property
    def anchor(self) -> TrustAnchor:
        """This keyring's root keys as a trust anchor to pin."""
        return TrustAnchor(dict(self.root_keys), self.root_threshold)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that gets signed."""
        return {
            "kind": "keyring",
            "version": self.version,
            "expires": self.expires,
            "root": {"keys": dict(self.root_keys), "threshold": self.root_threshold},
            "release": {"keys": dict(self.release_keys), "threshold": self.threshold},
            "fleet": {"keys": dict(self.fleet_keys), "threshold": self.fleet_threshold},
        }

    @classmethod
    def from_dict(cls, obj: Any) -> Keyring:
        """Parse the signed object of a keyring envelope.

        Raises:
            MalformedEnvelopeError: wrong shape or values.
        """
        try:
            if obj["kind"] != "keyring" or set(obj) != {
                "kind",
                "version",
                "expires",
                "root",
                "release",
                "fleet",
            }:
                raise ValueError("not a keyring object")
            return cls(
                version=obj["version"],
                expires=obj["expires"],
                threshold=obj["release"]["threshold"],
                root_keys=dict(obj["root"]["keys"]),
                root_threshold=obj["root"]["threshold"],
                release_keys=dict(obj["release"]["keys"]),
                fleet_keys=dict(obj["fleet"]["keys"]),
                fleet_threshold=obj["fleet"]["threshold"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedEnvelopeError(f"keyring: malformed ({exc})") from exc


def make_keyring(
    *,
    version: int,
    expires: datetime | str,
    root_keys: Sequence[KeyLike],
    release_keys: Sequence[KeyLike],
    fleet_keys: Sequence[KeyLike] = (),
    threshold: int = 1,
    root_threshold: int = 1,
    fleet_threshold: int = 1,
) -> Keyring:
    """Build a keyring from signing keys or base64 public keys.

    Raises:
        MalformedEnvelopeError: thresholds above the number of keys, bad keys.
    """
    return Keyring(
        version=version,
        expires=expires if isinstance(expires, str) else format_time(expires),
        threshold=threshold,
        root_keys=_role_keys(root_keys),
        root_threshold=root_threshold,
        release_keys=_role_keys(release_keys),
        fleet_keys=_role_keys(fleet_keys),
        fleet_threshold=fleet_threshold,
    )


def sign_keyring(keyring: Keyring, root_keys: Sequence[SigningKey]) -> dict[str, Any]:
    """The keyring envelope, signed by ``root_keys`` (old and new roots when rotating)."""
    return sign(keyring.to_dict(), root_keys)


def verify_keyring(
    envelope_bytes: bytes | Mapping[str, Any],
    trusted: Keyring | None,
    root_pubkeys_pinned: TrustAnchor | Mapping[str, str] | None = None,
    *,
    now: datetime,
    clock_slack_s: float = 0.0,
    check_expiry_now: bool = True,
) -> Keyring:
    """Verify a keyring against the trusted one (or the pinned anchor) - a pure function.

    Args:
        envelope_bytes: the keyring envelope.
        trusted: the keyring trusted so far, or None to start from ``root_pubkeys_pinned``.
        root_pubkeys_pinned: the device's trust anchor (or key id -> pub, threshold 1); used
            only when ``trusted`` is None.
        now: reference time for expiry.
        clock_slack_s: tolerated clock error.
        check_expiry_now: False for the intermediate links of a chain (TUF 5.3.10).

    Returns:
        The new trusted keyring (``trusted`` itself when the same keyring is presented again).

    Raises:
        ConfigError: neither ``trusted`` nor a pinned anchor given.
        MalformedEnvelopeError / EndlessDataError: not a keyring envelope.
        SignatureError / ThresholdError / WrongSignerError: not signed by the old root
            threshold and the new root threshold.
        RollbackError: version not higher than the trusted one (same version, other content).
        ExpiredError: expired beyond the slack.
    """
    if trusted is not None:
        old_keys, old_threshold = dict(trusted.root_keys), trusted.root_threshold
    elif isinstance(root_pubkeys_pinned, TrustAnchor):
        old_keys = dict(root_pubkeys_pinned.root_keys)
        old_threshold = root_pubkeys_pinned.root_threshold
    elif root_pubkeys_pinned is not None:
        old_keys, old_threshold = dict(root_pubkeys_pinned), 1
    else:
        raise ConfigError("verify_keyring: need a trusted keyring or pinned root keys")
    signed, _ = parse_envelope(envelope_bytes, max_bytes=KEYRING_MAX_BYTES)
    candidate = Keyring.from_dict(signed)
    # 5.3.4: signed by a threshold of the trusted root, then by a threshold of its own root.
    verify_envelope(envelope_bytes, old_keys, old_threshold, role="root (trusted)")
    verify_envelope(
        envelope_bytes, candidate.root_keys, candidate.root_threshold, role="root (new)"
    )
    if trusted is not None:
        if candidate.version == trusted.version and candidate == trusted:
            return trusted
        if candidate.version <= trusted.version:
            raise RollbackError(
                f"keyring version {candidate.version} is not newer than trusted {trusted.version}"
            )
    if check_expiry_now:
        check_expiry(candidate.expires, now, clock_slack_s, f"keyring v{candidate.version}")
    return candidate


def update_keyring(
    chain: Sequence[bytes | Mapping[str, Any]],
    trusted: Keyring | None,
    anchor: TrustAnchor | None = None,
    *,
    now: datetime,
    clock_slack_s: float = 0.0,
) -> Keyring:
    """Walk a chain of keyring envelopes (oldest first) from ``trusted``; return the newest.

    Links not newer than the trusted version are skipped; each newer link must verify against
    the previous one. Only the result's expiry is checked.

    Raises:
        VerificationError subclasses: a link fails; nothing is trusted from it onwards.
        ConfigError: no starting point.
    """
    current = trusted
    for link in chain:
        signed, _ = parse_envelope(link, max_bytes=KEYRING_MAX_BYTES)
        version = signed.get("version")
        if current is not None and isinstance(version, int) and version <= current.version:
            continue
        current = verify_keyring(
            link, current, anchor, now=now, clock_slack_s=clock_slack_s, check_expiry_now=False
        )
    if current is None:
        raise ConfigError("no keyring: none trusted yet and none delivered")
    check_expiry(current.expires, now, clock_slack_s, f"keyring v{current.version}")
    return current
