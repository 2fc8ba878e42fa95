"""Trust: Ed25519 keys, the root-signed keyring, release and fleet signatures (TUF-shaped).

::

    root key(s)  --sign-->  keyring (version, expiry; release keys + threshold; fleet keys)
    release key  --sign-->  manifest (signature.json beside manifest.json)
    fleet key    --sign-->  desired-state documents (MQTT payloads)

Every ``verify_*`` function is pure: bytes and a reference time in, a value or a specific
:class:`~edgeserve.errors.VerificationError` subclass out (see :mod:`edgeserve.trust.errors`).
Persisting what was verified is the caller's job, atomically (:func:`write_atomic`).

Modules, in the order a release travels to a device:

- ``keys``: Ed25519 signing keys, key ids and the signed envelope every document travels in.
- ``keyring``: the root-signed keyring, the device's trust anchor and keyring updates.
- ``release``: release signatures over a bundle's manifest and fleet-signed documents.
- ``errors``: one exception type per way a check fails, and its reason code.
- ``keydir``: the operator's keys directory on disk (init, rotate, read the keyring chain).

This ``__init__`` re-exports the public API (``keydir`` is imported by path).
"""

from __future__ import annotations

from edgeserve.trust.errors import (
    DigestMismatchError,
    EndlessDataError,
    ExpiredError,
    MalformedEnvelopeError,
    MixAndMatchError,
    ReplayError,
    RollbackError,
    SignatureError,
    ThresholdError,
    VerificationError,
    WrongSignerError,
    reason_code,
)
from edgeserve.trust.keyring import (
    KEYRING_MAX_BYTES,
    Keyring,
    TrustAnchor,
    check_expiry,
    format_time,
    make_keyring,
    parse_time,
    sign_keyring,
    update_keyring,
    verify_keyring,
    write_atomic,
)
from edgeserve.trust.keys import (
    ENVELOPE_MAX_BYTES,
    SigningKey,
    generate_key,
    keyid_of,
    parse_envelope,
    sign,
    sign_canonical,
    verify_envelope,
)
from edgeserve.trust.release import (
    DOCUMENT_MAX_BYTES,
    sign_document,
    sign_release,
    verify_bundle_files,
    verify_document,
    verify_release,
)

__all__ = [
    "DOCUMENT_MAX_BYTES",
    "ENVELOPE_MAX_BYTES",
    "KEYRING_MAX_BYTES",
    "DigestMismatchError",
    "EndlessDataError",
    "ExpiredError",
    "Keyring",
    "MalformedEnvelopeError",
    "MixAndMatchError",
    "ReplayError",
    "RollbackError",
    "SignatureError",
    "SigningKey",
    "ThresholdError",
    "TrustAnchor",
    "VerificationError",
    "WrongSignerError",
    "check_expiry",
    "format_time",
    "generate_key",
    "keyid_of",
    "make_keyring",
    "parse_envelope",
    "parse_time",
    "reason_code",
    "sign",
    "sign_canonical",
    "sign_document",
    "sign_keyring",
    "sign_release",
    "update_keyring",
    "verify_bundle_files",
    "verify_document",
    "verify_envelope",
    "verify_keyring",
    "verify_release",
    "write_atomic",
]
