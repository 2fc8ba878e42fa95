"""Ed25519 keys and envelopes: signing, verification, and each signature failure's error."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgeserve.bundle.manifest import canonical_json, canonical_members
from edgeserve.errors import ConfigError
from edgeserve.trust import (
    EndlessDataError,
    MalformedEnvelopeError,
    SignatureError,
    SigningKey,
    ThresholdError,
    WrongSignerError,
    generate_key,
    keyid_of,
    reason_code,
    sign,
    sign_canonical,
    verify_envelope,
)


def _trusted(*keys: SigningKey) -> dict[str, str]:
    return {k.keyid: k.public_key_b64 for k in keys}


def test_trust_keyid_is_sha256_of_raw_public_key() -> None:
    key = generate_key()
    raw = base64.b64decode(key.public_key_b64)
    assert len(raw) == 32
    assert key.keyid == hashlib.sha256(raw).hexdigest() == keyid_of(key.public_key_b64)


def test_trust_key_save_load_roundtrip_with_private_mode(tmp_path: Path) -> None:
    key = generate_key()
    path = key.save(tmp_path / "k" / "release.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert SigningKey.load(path).keyid == key.keyid


def test_trust_key_load_rejects_non_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        SigningKey.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        SigningKey.load(tmp_path / "missing.key")


def test_trust_sign_verify_roundtrip_canonical() -> None:
    key = generate_key()
    obj = {"b": 1, "a": [1, 2, {"z": "é"}]}
    envelope = sign(obj, [key, key])
    assert len(envelope["signatures"]) == 1  # the same key signs once
    data = canonical_json(envelope)
    assert verify_envelope(data, _trusted(key), 1, role="release") == obj
    # key order in the bytes does not matter: the signature covers canonical JSON
    shuffled = json.dumps({"signatures": envelope["signatures"], "signed": obj}, indent=3)
    assert verify_envelope(shuffled.encode(), _trusted(key), 1, role="release") == obj


def test_trust_sign_canonical_gives_the_bytes_of_the_encoded_envelope() -> None:
    keys = [generate_key(), generate_key()]
    obj = {"kind": "desired", "z": [1, {"b": "é", "a": None}], "a": {"y": 2.5, "x": True}}
    members = {k: canonical_json(v) for k, v in obj.items()}
    assert canonical_members(members) == canonical_json(obj)
    assert canonical_members({}) == canonical_json({}) == b"{}"
    envelope = sign_canonical(canonical_json(obj), [*keys, keys[0]])
    assert envelope == canonical_json(sign(obj, keys))
    assert verify_envelope(envelope, _trusted(*keys), 2, role="desired") == obj
    with pytest.raises(ConfigError):
        sign_canonical(b"{}", [])


def test_trust_tampered_content_raises_signature_error() -> None:
    key = generate_key()
    envelope = sign({"version": 3}, [key])
    envelope["signed"]["version"] = 4
    with pytest.raises(SignatureError, match="modified after signing") as err:
        verify_envelope(canonical_json(envelope), _trusted(key), 1, role="release")
    assert reason_code(err.value) == "bad_signature"


def test_trust_truncated_signature_raises_signature_error() -> None:
    key = generate_key()
    envelope = sign({"version": 3}, [key])
    raw = base64.b64decode(envelope["signatures"][0]["sig"])
    envelope["signatures"][0]["sig"] = base64.b64encode(raw[:40]).decode()
    with pytest.raises(SignatureError):
        verify_envelope(canonical_json(envelope), _trusted(key), 1, role="release")


def test_trust_verifying_does_not_load_cryptography(tmp_path: Path) -> None:
    """A device only verifies: that path must not map cryptography's Rust extension."""
    key = generate_key()
    envelope = tmp_path / "envelope.json"
    envelope.write_bytes(canonical_json(sign({"version": 1}, [key])))
    code = (
        "import sys\n"
        "from edgeserve.trust import verify_envelope\n"
        f"data = open({str(envelope)!r}, 'rb').read()\n"
        f"print(verify_envelope(data, {_trusted(key)!r}, 1, role='fleet'),"
        " any(m.split('.')[0] == 'cryptography' for m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'version': 1} False"


def test_trust_wrong_signer_raises_wrong_signer_error() -> None:
    trusted, other = generate_key(), generate_key()
    data = canonical_json(sign({"x": 1}, [other]))
    with pytest.raises(WrongSignerError, match="no valid signature by a trusted release key"):
        verify_envelope(data, _trusted(trusted), 1, role="release")


def test_trust_unsigned_envelope_raises_wrong_signer_error() -> None:
    data = canonical_json({"signed": {"x": 1}, "signatures": []})
    with pytest.raises(WrongSignerError):
        verify_envelope(data, _trusted(generate_key()), 1, role="release")


def test_trust_key_compromise_below_threshold_raises_threshold_error() -> None:
    a, b = generate_key(), generate_key()
    stolen_only = canonical_json(sign({"x": 1}, [a]))
    with pytest.raises(ThresholdError, match="1 valid signature"):
        verify_envelope(stolen_only, _trusted(a, b), 2, role="release")
    # the same signature repeated does not count twice
    env = sign({"x": 1}, [a])
    env["signatures"] = env["signatures"] * 2
    with pytest.raises(ThresholdError):
        verify_envelope(canonical_json(env), _trusted(a, b), 2, role="release")
    both = canonical_json(sign({"x": 1}, [a, b]))
    assert verify_envelope(both, _trusted(a, b), 2, role="release") == {"x": 1}


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"signed": {}}',
        b'{"signed": [], "signatures": []}',
        b'{"signed": {}, "signatures": [{"keyid": 1, "sig": "x"}]}',
        b'{"signed": {}, "signatures": [{"keyid": "a", "sig": "***"}]}',
        b'{"signed": {}, "signatures": [], "extra": 1}',
        b'{"signed": {"a": 1, "a": 2}, "signatures": []}',
    ],
    ids=[
        "not-json",
        "array",
        "no-signatures",
        "signed-not-object",
        "keyid-type",
        "sig-not-b64",
        "extra-key",
        "duplicate-key",
    ],
)
def test_trust_malformed_envelope_raises_malformed_error(data: bytes) -> None:
    with pytest.raises(MalformedEnvelopeError):
        verify_envelope(data, {}, 1, role="release")


def test_trust_oversized_envelope_raises_endless_data_error() -> None:
    data = b'{"signed": {"pad": "' + b"x" * 2048 + b'"}, "signatures": []}'
    with pytest.raises(EndlessDataError, match="over 1024"):
        verify_envelope(data, {}, 1, role="release", max_bytes=1024)
