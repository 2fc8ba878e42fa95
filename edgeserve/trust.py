"""Trust: Ed25519 keys, the root-signed keyring, release and fleet signatures (TUF-shaped).

::

    root key(s)  --sign-->  keyring (version, expiry; release keys + threshold; fleet keys)
    release key  --sign-->  manifest (signature.json beside manifest.json)
    fleet key    --sign-->  desired-state documents (MQTT payloads)

Every ``verify_*`` function is pure: bytes and a reference time in, a value or a specific
:class:`~edgeserve.errors.VerificationError` subclass out (see :mod:`edgeserve.trust_errors`).
Persisting what was verified is the caller's job, atomically (:func:`write_atomic`).

This module only re-exports; the code lives in ``trust_keys``, ``trust_keyring``,
``trust_release`` and ``trust_errors``.
"""

from __future__ import annotations

from edgeserve.trust_errors import (
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
from edgeserve.trust_keyring import (
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
from edgeserve.trust_keys import (
    ENVELOPE_MAX_BYTES,
    SigningKey,
    generate_key,
    keyid_of,
    parse_envelope,
    sign,
    verify_envelope,
)
from edgeserve.trust_release import (
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
