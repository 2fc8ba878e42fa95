"""Release and fleet-document verification: one named test per TUF attack, each asserting the
specific error (device-level tests in tests/sync also assert the serving version is unchanged).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support.fleet_keys import FleetKeys, make_signed_bundle

from edgeserve.bundle import SIGNATURE_NAME, Bundle
from edgeserve.bundle.manifest import canonical_json
from edgeserve.trust import (
    DigestMismatchError,
    EndlessDataError,
    ExpiredError,
    MixAndMatchError,
    RollbackError,
    SignatureError,
    ThresholdError,
    WrongSignerError,
    generate_key,
    make_keyring,
    sign_document,
    sign_release,
    verify_bundle_files,
    verify_document,
    verify_keyring,
    verify_release,
)
from edgeserve.trust.keydir import rotate_keys


@pytest.fixture(scope="module")
def signed_v2(tmp_path_factory: pytest.TempPathFactory, fleet_keys: FleetKeys) -> Bundle:
    return make_signed_bundle(tmp_path_factory.mktemp("rel") / "b", [fleet_keys.release], version=2)


def _sig(bundle: Bundle) -> bytes:
    return (bundle.path / SIGNATURE_NAME).read_bytes()


def test_trust_release_roundtrip(signed_v2: Bundle, fleet_keys: FleetKeys, now: datetime) -> None:
    manifest = verify_release(
        _sig(signed_v2),
        fleet_keys.keyring,
        now=now,
        installed_version=1,
        expected_name="linear",
        expected_version=2,
    )
    assert manifest == signed_v2.manifest
    assert verify_bundle_files(signed_v2.path, manifest).manifest == manifest


def test_trust_attack_arbitrary_artifact_raises_digest_mismatch(
    tmp_path: Path, signed_v2: Bundle, fleet_keys: FleetKeys, now: datetime
) -> None:
    copy = tmp_path / "b"
    shutil.copytree(signed_v2.path, copy)
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same length, other content
    model.write_bytes(bytes(data))
    manifest = verify_release(_sig(signed_v2), fleet_keys.keyring, now=now, installed_version=None)
    with pytest.raises(DigestMismatchError, match="sha256 mismatch"):
        verify_bundle_files(copy, manifest)


def test_trust_attack_endless_data_file_raises_digest_mismatch(
    tmp_path: Path, signed_v2: Bundle, fleet_keys: FleetKeys, now: datetime
) -> None:
    copy = tmp_path / "b"
    shutil.copytree(signed_v2.path, copy)
    with open(copy / "model.onnx", "ab") as fh:
        fh.write(b"\0" * 10_000)
    manifest = verify_release(_sig(signed_v2), fleet_keys.keyring, now=now, installed_version=None)
    with pytest.raises(DigestMismatchError, match="longer than"):
        verify_bundle_files(copy, manifest)


def test_trust_attack_endless_data_envelope_raises_endless_data(
    fleet_keys: FleetKeys, now: datetime
) -> None:
    huge = b'{"signed": {"x": "' + b"A" * 2_000_000 + b'"}, "signatures": []}'
    with pytest.raises(EndlessDataError):
        verify_release(huge, fleet_keys.keyring, now=now, installed_version=None)


def test_trust_attack_tampered_manifest_raises_signature_error(
    signed_v2: Bundle, fleet_keys: FleetKeys, now: datetime
) -> None:
    envelope = json.loads(_sig(signed_v2))
    envelope["signed"]["files"][0]["sha256"] = "0" * 64  # point at an attacker's file
    with pytest.raises(SignatureError):
        verify_release(
            canonical_json(envelope), fleet_keys.keyring, now=now, installed_version=None
        )


def test_trust_attack_rollback_raises_rollback_error(
    signed_v2: Bundle, fleet_keys: FleetKeys, now: datetime
) -> None:
    with pytest.raises(RollbackError, match="lower than installed v3"):
        verify_release(_sig(signed_v2), fleet_keys.keyring, now=now, installed_version=3)
    # an operator-signed rollback (allow_downgrade in fleet-signed desired state) may go lower
    ok = verify_release(
        _sig(signed_v2), fleet_keys.keyring, now=now, installed_version=3, allow_downgrade=True
    )
    assert ok.version == 2


def test_trust_attack_freeze_expired_keyring_raises_expired(
    signed_v2: Bundle, fleet_keys: FleetKeys, now: datetime
) -> None:
    later = now + timedelta(days=400)
    with pytest.raises(ExpiredError, match="keyring v1 expired"):
        verify_release(_sig(signed_v2), fleet_keys.keyring, now=later, installed_version=None)


def test_trust_attack_mix_and_match_raises_mix_and_match(
    tmp_path: Path, signed_v2: Bundle, fleet_keys: FleetKeys, now: datetime
) -> None:
    with pytest.raises(MixAndMatchError, match="desired state says v3"):
        verify_release(
            _sig(signed_v2),
            fleet_keys.keyring,
            now=now,
            installed_version=None,
            expected_version=3,
        )
    with pytest.raises(MixAndMatchError, match="not 'other'"):
        verify_release(
            _sig(signed_v2),
            fleet_keys.keyring,
            now=now,
            installed_version=None,
            expected_name="other",
        )
    # a validly signed v3 bundle shipped with v2's signature
    v3 = make_signed_bundle(tmp_path / "v3", [fleet_keys.release], version=3, seed=1)
    manifest_v2 = verify_release(
        _sig(signed_v2), fleet_keys.keyring, now=now, installed_version=None
    )
    with pytest.raises(MixAndMatchError, match="is not the signed manifest"):
        verify_bundle_files(v3.path, manifest_v2)


def test_trust_attack_wrong_signer_raises_wrong_signer(
    tmp_path: Path, fleet_keys: FleetKeys, now: datetime
) -> None:
    # signed by the fleet key (a real key of another role)
    bundle = make_signed_bundle(tmp_path / "b", [fleet_keys.fleet], version=2)
    with pytest.raises(WrongSignerError, match="trusted release key"):
        verify_release(_sig(bundle), fleet_keys.keyring, now=now, installed_version=None)


def test_trust_attack_key_compromise_below_threshold_raises_threshold(
    tmp_path: Path, fleet_keys: FleetKeys, now: datetime
) -> None:
    second = generate_key()
    ring = make_keyring(
        version=2,
        expires=now + timedelta(days=1),
        root_keys=[fleet_keys.root],
        release_keys=[fleet_keys.release, second],
        threshold=2,
        fleet_keys=[fleet_keys.fleet],
    )
    bundle = make_signed_bundle(tmp_path / "b", [fleet_keys.release], version=2)
    with pytest.raises(ThresholdError, match="threshold is 2"):
        verify_release(_sig(bundle), ring, now=now, installed_version=None)
    sign_release(bundle.path, [fleet_keys.release, second])
    assert verify_release(_sig(bundle), ring, now=now, installed_version=None).version == 2


def test_trust_attack_rotated_out_key_raises_wrong_signer(
    tmp_path: Path, fleet_keys: FleetKeys, now: datetime
) -> None:
    directory = tmp_path / "keys"
    shutil.copytree(fleet_keys.directory, directory)
    v2 = verify_keyring(
        canonical_json(json.loads((directory / "keyring.json").read_bytes())),
        fleet_keys.keyring,
        now=now,
    )
    assert v2 == fleet_keys.keyring
    rotated = rotate_keys(directory, roles=("release",))
    bundle = make_signed_bundle(tmp_path / "b", [fleet_keys.release], version=2)  # old key
    with pytest.raises(WrongSignerError):
        verify_release(_sig(bundle), rotated, now=now, installed_version=None)


def _desired(now: datetime, **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "kind": "desired",
        "seq": 1,
        "expires": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    doc.update(extra)
    return doc


def test_trust_document_roundtrip_and_errors(fleet_keys: FleetKeys, now: datetime) -> None:
    data = canonical_json(sign_document(_desired(now), [fleet_keys.fleet]))
    assert verify_document(data, fleet_keys.keyring, now, "desired")["seq"] == 1
    with pytest.raises(MixAndMatchError, match="expected 'reported'"):
        verify_document(data, fleet_keys.keyring, now, "reported")
    with pytest.raises(ExpiredError, match="desired document expired"):
        verify_document(data, fleet_keys.keyring, now + timedelta(hours=2), "desired")
    by_release = canonical_json(sign_document(_desired(now), [fleet_keys.release]))
    with pytest.raises(WrongSignerError, match="fleet"):
        verify_document(by_release, fleet_keys.keyring, now, "desired")
