"""Release signatures over bundle manifests, and fleet-signed documents (desired state).

The release envelope (``signature.json`` beside ``manifest.json``) signs the manifest's dict;
the manifest lists every file's sha256 and length, so the signature covers the whole bundle.
:func:`verify_release` and :func:`verify_document` are pure functions over bytes and a reference
time; :func:`verify_bundle_files` does the I/O of hashing files against an already verified
manifest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeserve.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Bundle,
    BundleLimits,
    check_bundle,
    read_bundle,
)
from edgeserve.bundle.manifest import Manifest, canonical_json
from edgeserve.errors import BundleError
from edgeserve.trust.errors import (
    DigestMismatchError,
    MalformedEnvelopeError,
    MixAndMatchError,
    RollbackError,
)
from edgeserve.trust.keyring import Keyring, check_expiry, write_atomic
from edgeserve.trust.keys import SigningKey, sign, verify_envelope

__all__ = [
    "DOCUMENT_MAX_BYTES",
    "sign_document",
    "sign_release",
    "verify_bundle_files",
    "verify_document",
    "verify_release",
]

DOCUMENT_MAX_BYTES = 262_144  # bytes; equals protocol.MAX_PAYLOAD_BYTES (one MQTT message)


def sign_release(bundle_dir: str | os.PathLike[str], release_keys: Sequence[SigningKey]) -> Path:
    """Sign a bundle: write ``signature.json`` (canonical JSON envelope over its manifest).

    The bundle is checked first (every file's hash), so nobody signs a corrupt bundle.

    Returns:
        The path of ``signature.json``.

    Raises:
        BundleError: the bundle is invalid.
        StorageError: cannot write.
    """
    bundle = check_bundle(bundle_dir)
    envelope = sign(bundle.manifest.to_dict(), release_keys)
    return write_atomic(bundle.path / SIGNATURE_NAME, canonical_json(envelope))


def verify_release(
    envelope_bytes: bytes | Mapping[str, Any],
    keyring: Keyring,
    *,
    now: datetime,
    installed_version: int | None,
    allow_downgrade: bool = False,
    expected_name: str | None = None,
    expected_version: int | None = None,
    clock_slack_s: float = 0.0,
) -> Manifest:
    """Verify a release envelope against the keyring; return the signed manifest.

    Args:
        envelope_bytes: contents of ``signature.json`` (or the parsed envelope).
        keyring: the verified keyring.
        now: reference time (the keyring must not be expired: freeze attack).
        installed_version: the version currently active for this model, if any.
        allow_downgrade: an operator-signed (fleet-signed desired state) permission to go lower.
        expected_name / expected_version: what the desired state asked for.
        clock_slack_s: tolerated clock error.

    Returns:
        The signed :class:`Manifest`.

    Raises:
        ExpiredError: the keyring is expired.
        MalformedEnvelopeError: not an envelope, or the signed object is not a manifest.
        SignatureError / ThresholdError / WrongSignerError: signatures.
        MixAndMatchError: another model or version than expected.
        RollbackError: lower than ``installed_version`` without ``allow_downgrade``.
    """
    check_expiry(keyring.expires, now, clock_slack_s, f"keyring v{keyring.version}")
    signed = verify_envelope(
        envelope_bytes, keyring.release_keys, keyring.threshold, role="release"
    )
    try:
        manifest = Manifest.from_dict(signed)
    except BundleError as exc:
        raise MalformedEnvelopeError(f"release: signed object is not a manifest ({exc})") from exc
    if expected_name is not None and manifest.name != expected_name:
        raise MixAndMatchError(f"release is for model {manifest.name!r}, not {expected_name!r}")
    if expected_version is not None and manifest.version != expected_version:
        raise MixAndMatchError(
            f"release is {manifest.name} v{manifest.version}, desired state says "
            f"v{expected_version}"
        )
    if not manifest.files:
        raise MalformedEnvelopeError("release: signed manifest lists no files")
    downgrade = installed_version is not None and manifest.version < installed_version
    if downgrade and not allow_downgrade:
        raise RollbackError(
            f"{manifest.name} v{manifest.version} is lower than installed "
            f"v{installed_version} and no signed rollback allows it"
        )
    return manifest


def verify_bundle_files(
    bundle_dir: str | os.PathLike[str],
    signed: Manifest,
    *,
    limits: BundleLimits | None = None,
) -> Bundle:
    """Check an unpacked bundle against a verified manifest: its ``manifest.json`` must be the
    signed one, and every file's length and sha256 must match (streamed, capped at the signed
    length).

    Raises:
        MixAndMatchError: the bundle's manifest is not the signed manifest.
        DigestMismatchError: a file is missing, extra, longer, shorter or hashes differently.
    """
    limits = limits or BundleLimits()
    try:
        bundle = read_bundle(bundle_dir, limits=limits)
    except BundleError as exc:
        raise DigestMismatchError(f"bundle: {exc}") from exc
    if canonical_json(bundle.manifest.to_dict()) != canonical_json(signed.to_dict()):
        raise MixAndMatchError(
            f"bundle {MANIFEST_NAME} ({bundle.manifest.name} v{bundle.manifest.version}) is not "
            f"the signed manifest ({signed.name} v{signed.version})"
        )
    try:
        return check_bundle(bundle_dir, limits=limits)
    except BundleError as exc:
        raise DigestMismatchError(str(exc)) from exc


def sign_document(doc: Mapping[str, Any], fleet_keys: Sequence[SigningKey]) -> dict[str, Any]:
    """Sign a fleet document (desired state) with the fleet server's key(s).

    ``doc`` must carry ``"kind"`` (e.g. ``"desired"``) so that one kind cannot be replayed as
    another; ``"expires"`` (ISO 8601) is checked by :func:`verify_document` when present.

    Raises:
        MalformedEnvelopeError: ``doc`` has no string ``kind``.
    """
    if not isinstance(doc.get("kind"), str):
        raise MalformedEnvelopeError("a fleet document needs a 'kind'")
    return sign(doc, fleet_keys)


def verify_document(
    envelope_bytes: bytes | Mapping[str, Any],
    keyring: Keyring,
    now: datetime,
    kind: str,
    *,
    clock_slack_s: float = 0.0,
    max_bytes: int = DOCUMENT_MAX_BYTES,
) -> dict[str, Any]:
    """Verify a fleet-signed document; return its signed object. Pure.

    Args:
        envelope_bytes: the envelope (an MQTT payload).
        keyring: the verified keyring (its fleet keys and threshold).
        now: reference time.
        kind: the expected ``kind``.
        clock_slack_s: tolerated clock error for ``expires``.
        max_bytes: size bound.

    Raises:
        EndlessDataError: over ``max_bytes``.
        MalformedEnvelopeError: not an envelope.
        SignatureError / ThresholdError / WrongSignerError: not signed by the fleet key(s).
        MixAndMatchError: another kind of document.
        ExpiredError: the document or the keyring is expired.
    """
    signed = verify_envelope(
        envelope_bytes,
        keyring.fleet_keys,
        keyring.fleet_threshold,
        role="fleet",
        max_bytes=max_bytes,
    )
    if signed.get("kind") != kind:
        raise MixAndMatchError(f"document kind is {signed.get('kind')!r}, expected {kind!r}")
    check_expiry(keyring.expires, now, clock_slack_s, f"keyring v{keyring.version}")
    if "expires" in signed:
        check_expiry(signed["expires"], now, clock_slack_s, f"{kind} document")
    return signed
