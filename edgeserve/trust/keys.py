"""Ed25519 keys and signed envelopes over canonical JSON.

An envelope is ``{"signed": <object>, "signatures": [{"keyid": str, "sig": base64}]}``; each
signature covers ``canonical_json(signed)`` (the same shape as TUF metadata, specification
section 4.2). A key's id is the sha256 hex digest of its raw 32-byte public key, so a keyring
cannot claim an id for a key that is not its own.

:func:`verify_envelope` is pure: bytes and trusted keys in, the signed object out.

Keys are made, stored (PEM PKCS#8) and used to sign with ``cryptography``; signatures are
verified with PyNaCl (libsodium), which is what a device does. Both are PyCA's; the split is for
the device's memory: verifying through ``cryptography`` maps its 8 MB Rust extension into the
agent, PyNaCl adds 1.6 MB (RSS after one verify, measured beside numpy: 33.6 vs 26.6 MB). So
``cryptography`` is imported only where a key is generated, loaded, saved or signs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import nacl.exceptions
import nacl.signing

from edgeserve.bundle.manifest import canonical_json, canonical_members
from edgeserve.errors import ConfigError
from edgeserve.fsutil import write_atomic
from edgeserve.trust.errors import (
    EndlessDataError,
    MalformedEnvelopeError,
    SignatureError,
    ThresholdError,
    WrongSignerError,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "ENVELOPE_MAX_BYTES",
    "SigningKey",
    "generate_key",
    "keyid_of",
    "parse_envelope",
    "sign",
    "sign_canonical",
    "verify_envelope",
]

ENVELOPE_MAX_BYTES: Final = 1_048_576  # bytes; a manifest envelope is a few KiB
_MAX_SIGNATURES: Final = 32  # more than any sane threshold; bounds the work per envelope


def keyid_of(public_key_b64: str) -> str:
    """The key id of a base64 raw Ed25519 public key: sha256 hex of the 32 raw bytes.

    Raises:
        MalformedEnvelopeError: not base64 of 32 bytes.
    """
    return hashlib.sha256(_public_raw(public_key_b64)).hexdigest()


def _public_raw(public_key_b64: str) -> bytes:
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise MalformedEnvelopeError(f"public key is not base64: {public_key_b64!r}") from exc
    if len(raw) != 32:
        raise MalformedEnvelopeError(f"Ed25519 public key must be 32 bytes, not {len(raw)}")
    return raw


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its public half and key id.

    Attributes:
        private: the ``cryptography`` private key.
    """

    private: Ed25519PrivateKey

    @property
    def public_key_b64(self) -> str:
        """The raw 32-byte public key, base64."""
        from cryptography.hazmat.primitives import serialization

        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode("ascii")

    @property
    def keyid(self) -> str:
        """sha256 hex of the raw public key."""
        return keyid_of(self.public_key_b64)

    def sign_bytes(self, data: bytes) -> str:
        """Sign ``data``; return the base64 signature."""
        return base64.b64encode(self.private.sign(data)).decode("ascii")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the key as unencrypted PEM PKCS#8, mode 0600, atomically.

        Raises:
            StorageError: the file cannot be written.
        """
        # serialization is imported where keys are written or read, not to verify: it pulls the
        # SSH key support (and bcrypt), 0.6 MB RSS a device that only verifies does not need
        from cryptography.hazmat.primitives import serialization

        target = Path(path)
        pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return write_atomic(target, pem, 0o600)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        """Read a PEM PKCS#8 Ed25519 private key.

        Raises:
            ConfigError: missing, unreadable, or not an Ed25519 private key.
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        source = Path(path)
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read key {source}: {exc.strerror or exc}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{source}: not an Ed25519 key")
        return cls(key)


def generate_key() -> SigningKey:
    """A new random Ed25519 signing key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return SigningKey(Ed25519PrivateKey.generate())


def sign(obj: Mapping[str, Any], keys: Sequence[SigningKey]) -> dict[str, Any]:
    """Wrap ``obj`` in an envelope signed by every key in ``keys`` (duplicates once).

    Args:
        obj: a JSON-ready mapping.
        keys: at least one signing key.

    Returns:
        ``{"signed": obj, "signatures": [{"keyid", "sig"}, ...]}``, signatures sorted by keyid.

    Raises:
        ConfigError: no keys given.
    """
    if not keys:
        raise ConfigError("sign: at least one key is needed")
    signed = dict(obj)
    return {"signed": signed, "signatures": _signatures(canonical_json(signed), keys)}


def _signatures(payload: bytes, keys: Sequence[SigningKey]) -> list[dict[str, str]]:
    if not keys:
        raise ConfigError("sign: at least one key is needed")
    by_id = {key.keyid: key for key in keys}
    return [{"keyid": kid, "sig": by_id[kid].sign_bytes(payload)} for kid in sorted(by_id)]


def sign_canonical(payload: bytes, keys: Sequence[SigningKey]) -> bytes:
    """The canonical JSON of :func:`sign`'s envelope, given ``payload``, the canonical JSON of
    the object to sign: the envelope's bytes without encoding the object a second time (a
    fleet server signs a ~3 KB desired document per device).

    Raises:
        ConfigError: no keys given.
    """
    return canonical_members(
        {"signatures": canonical_json(_signatures(payload, keys)), "signed": payload}
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedEnvelopeError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def parse_envelope(
    data: bytes | Mapping[str, Any], *, max_bytes: int = ENVELOPE_MAX_BYTES
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Parse an envelope's structure without checking any signature.

    Returns:
        ``(signed, [(keyid, raw signature), ...])``.

    Raises:
        EndlessDataError: more than ``max_bytes``.
        MalformedEnvelopeError: not JSON or not the envelope shape.
    """
    if isinstance(data, Mapping):
        obj: Any = data
    else:
        if len(data) > max_bytes:
            raise EndlessDataError(f"envelope of {len(data)} bytes is over {max_bytes}")
        try:
            obj = json.loads(data, object_pairs_hook=_no_duplicates)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            if isinstance(exc, MalformedEnvelopeError):
                raise
            raise MalformedEnvelopeError(f"envelope is not valid JSON ({exc})") from exc
    if not isinstance(obj, Mapping) or set(obj) != {"signed", "signatures"}:
        raise MalformedEnvelopeError("envelope must have exactly 'signed' and 'signatures'")
    signed, sigs = obj["signed"], obj["signatures"]
    if not isinstance(signed, dict) or not isinstance(sigs, list):
        raise MalformedEnvelopeError("'signed' must be an object and 'signatures' a list")
    if len(sigs) > _MAX_SIGNATURES:
        raise MalformedEnvelopeError(f"more than {_MAX_SIGNATURES} signatures")
    parsed: list[tuple[str, bytes]] = []
    for entry in sigs:
        if (
            not isinstance(entry, Mapping)
            or set(entry) != {"keyid", "sig"}
            or not isinstance(entry["keyid"], str)
            or not isinstance(entry["sig"], str)
        ):
            raise MalformedEnvelopeError("each signature must be {'keyid': str, 'sig': str}")
        try:
            raw = base64.b64decode(entry["sig"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedEnvelopeError(f"signature by {entry['keyid'][:12]} not base64") from exc
        parsed.append((entry["keyid"], raw))
    return signed, parsed


def _signature_matches(public_raw: bytes, signature: bytes, payload: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``payload`` by ``public_raw``."""
    try:
        nacl.signing.VerifyKey(public_raw).verify(payload, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        # ValueError: a signature that is not 64 bytes, or a key libsodium refuses
        return False
    return True


def verify_envelope(
    data: bytes | Mapping[str, Any],
    trusted_keys: Mapping[str, str],
    threshold: int,
    *,
    role: str,
    max_bytes: int = ENVELOPE_MAX_BYTES,
) -> dict[str, Any]:
    """Check that ``threshold`` distinct trusted keys signed the envelope; return ``signed``.

    Signatures by keys outside ``trusted_keys`` are ignored (TUF spec 5.3.4: only keys the
    role lists count towards its threshold); each trusted key counts once.

    Args:
        data: envelope bytes (or an already-parsed mapping).
        trusted_keys: key id -> base64 public key, the keys this role trusts.
        threshold: distinct valid signatures needed, at least 1.
        role: ``root``, ``release`` or ``fleet``, named in error messages.
        max_bytes: size bound for ``data``.

    Returns:
        The signed object.

    Raises:
        MalformedEnvelopeError: not an envelope.
        EndlessDataError: over ``max_bytes``.
        SignatureError: a trusted key's signature does not match (tampered content), and the
            threshold is not reached.
        WrongSignerError: no valid signature by any trusted key.
        ThresholdError: some, but fewer than ``threshold``, valid signatures.
    """
    if threshold < 1:
        raise ThresholdError(f"{role}: threshold must be at least 1")
    signed, signatures = parse_envelope(data, max_bytes=max_bytes)
    payload = canonical_json(signed)
    valid: set[str] = set()
    invalid: set[str] = set()
    for keyid, raw_sig in signatures:
        pub_b64 = trusted_keys.get(keyid)
        if pub_b64 is None or keyid in valid:
            continue
        if _signature_matches(_public_raw(pub_b64), raw_sig, payload):
            valid.add(keyid)
        else:
            invalid.add(keyid)
    if len(valid) >= threshold:
        return signed
    if invalid - valid:
        raise SignatureError(
            f"{role}: signature by trusted key {sorted(invalid - valid)[0][:12]} does not match "
            "the content (modified after signing)"
        )
    if not valid:
        raise WrongSignerError(
            f"{role}: no valid signature by a trusted {role} key "
            f"({len(signatures)} signature(s) by unknown keys)"
        )
    raise ThresholdError(f"{role}: {len(valid)} valid signature(s), threshold is {threshold}")
