"""Why a trust check failed: one :class:`~edgeserve.errors.VerificationError` subclass per attack.

Named after the attacks TUF's specification lists (section 1.5.2, "Goals to protect against
specific attacks") so a test, a log line and a device report all say *which* attack was stopped::

    VerificationError
    ├── MalformedEnvelopeError  not a signed envelope (bad JSON, missing fields, bad base64)
    ├── SignatureError          a trusted key's signature does not match the content (tampering)
    ├── ThresholdError          fewer valid signatures from trusted keys than the threshold
    │   └── WrongSignerError    no valid signature from any key trusted for this role
    │                           (wrong key, another role's key, a rotated-out key)
    ├── ExpiredError            past its expiry plus the clock slack (freeze attack)
    ├── RollbackError           a version lower than the one installed or trusted
    ├── ReplayError             a desired-state ``seq`` not newer than the last one applied
    ├── MixAndMatchError        valid pieces that do not belong together (name, version, kind)
    ├── EndlessDataError        more bytes than the signed or configured size
    └── DigestMismatchError     a file's sha256 or length differs from the signed value
                                (arbitrary artifact)

Every class carries ``reason_code``, the short stable string a device reports upstream.
"""

from __future__ import annotations

from typing import ClassVar

from edgeserve.errors import VerificationError

__all__ = [
    "DigestMismatchError",
    "EndlessDataError",
    "ExpiredError",
    "MalformedEnvelopeError",
    "MixAndMatchError",
    "ReplayError",
    "RollbackError",
    "SignatureError",
    "ThresholdError",
    "VerificationError",
    "WrongSignerError",
    "reason_code",
]


class MalformedEnvelopeError(VerificationError):
    """The bytes are not a well-formed signed envelope or document."""

    reason_code: ClassVar[str] = "malformed"


class SignatureError(VerificationError):
    """A signature by a trusted key does not verify: the content was changed after signing."""

    reason_code: ClassVar[str] = "bad_signature"


class ThresholdError(VerificationError):
    """Valid signatures from trusted keys are fewer than the role's threshold
    (e.g. one compromised key when two are required)."""

    reason_code: ClassVar[str] = "threshold"


class WrongSignerError(ThresholdError):
    """Not one valid signature from a key trusted for the role: signed by an unknown key,
    by another role's key, by a key rotated out of the keyring, or not signed at all."""

    reason_code: ClassVar[str] = "wrong_signer"


class ExpiredError(VerificationError):
    """Expired (plus the configured clock slack): an attacker may be replaying stale data."""

    reason_code: ClassVar[str] = "expired"


class RollbackError(VerificationError):
    """A version lower than the installed or trusted one, without a signed permission."""

    reason_code: ClassVar[str] = "rollback"


class ReplayError(VerificationError):
    """A desired-state document whose ``seq`` is not newer than the last one applied."""

    reason_code: ClassVar[str] = "replay"


class MixAndMatchError(VerificationError):
    """Individually valid pieces that do not belong together: a release for another model
    or version, a bundle whose manifest is not the signed one, a document of another kind."""

    reason_code: ClassVar[str] = "mix_and_match"


class EndlessDataError(VerificationError):
    """More bytes than the signed size or the configured cap (endless data attack)."""

    reason_code: ClassVar[str] = "endless_data"


class DigestMismatchError(VerificationError):
    """A file's sha256 or length differs from the signed value (arbitrary artifact)."""

    reason_code: ClassVar[str] = "digest_mismatch"


def reason_code(exc: BaseException) -> str:
    """The short reason string a device reports for ``exc`` (``"error"`` when unknown)."""
    code = getattr(exc, "reason_code", None)
    if isinstance(code, str):
        return code
    if isinstance(exc, VerificationError):
        return "verification"
    return "error"
