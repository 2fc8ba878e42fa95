"""The trust and protocol APIs other components code against are pinned: a change to them
is deliberate."""

from __future__ import annotations

import edgeserve.protocol as protocol
import edgeserve.trust as trust
from edgeserve.errors import EdgeServeError, VerificationError


def test_trust_exports_are_pinned() -> None:
    assert sorted(trust.__all__) == sorted(
        [
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
    )
    for name in trust.__all__:
        assert hasattr(trust, name), name
        obj = getattr(trust, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, VerificationError), name
            assert isinstance(trust.reason_code(obj("x")), str)


def test_trust_protocol_exports_are_pinned() -> None:
    assert sorted(protocol.__all__) == sorted(
        [
            "MAX_MODELS",
            "MAX_PAYLOAD_BYTES",
            "MAX_SUMMARIES",
            "PRESENCE_OFFLINE",
            "PRESENCE_ONLINE",
            "TRANSITIONS",
            "Artifact",
            "DesiredState",
            "IllegalTransitionError",
            "InstallEvent",
            "InstallMachine",
            "InstallState",
            "ModelStatus",
            "ModelTarget",
            "ProtocolError",
            "ReportCoalescer",
            "Reported",
            "Split",
            "Telemetry",
            "Topics",
            "decode",
            "encode",
            "fleet_filter",
            "parse_topic",
            "topics",
        ]
    )
    for name in protocol.__all__:
        assert hasattr(protocol, name), name
    assert issubclass(protocol.ProtocolError, EdgeServeError)


def test_trust_protocol_has_no_paho_import() -> None:
    """Sans I/O: only edgeserve.mqtt imports paho."""
    import pathlib

    core = pathlib.Path(protocol.__file__).parent.parent
    paths = sorted((core / "protocol").glob("*.py")) + sorted((core / "trust").glob("*.py"))
    assert len(paths) >= 10
    for path in paths:
        text = path.read_text()
        assert "import paho" not in text and "from paho" not in text, path
