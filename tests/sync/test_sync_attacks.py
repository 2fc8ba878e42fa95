"""One named test per attack at the device: each asserts the specific reason reported upstream
and that the serving version did not change (TUF spec 1.5.2; python-tuf's
test_updater_top_level_update.py does the same at the client)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from edgeserve.agent.sync.simulator import SimulatedInstaller
from support.artifact_server import ArtifactServer, Fault
from support.fleet_keys import FleetKeys
from support.fleet_sync import FleetDriver, Release, model_state

from edgeserve.protocol import Artifact, ModelTarget, Reported
from edgeserve.trust import generate_key, make_keyring, sign, sign_keyring


@pytest.fixture
def serving_v1(make_device, driver: FleetDriver, releases: dict[str, Release]):
    """A device serving linear v1, installed through fleet sync."""
    sync, inst = make_device()
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1))
    return sync, inst


def _rejected(driver: FleetDriver, code: str) -> Reported:
    def pred(rep: Reported) -> bool:
        st = rep.models.get("linear")
        return st is not None and st.state.value == "REJECTED" and st.reason_code == code

    return driver.wait_report("dev1", pred)


def _doc_rejected(driver: FleetDriver, code: str) -> Reported:
    return driver.wait_report("dev1", lambda rep: rep.reason_code == code)


def _assert_still_v1(inst: SimulatedInstaller, rep: Reported | None = None) -> None:
    assert inst.active_version("linear") == 1
    assert inst.installed_versions("linear") == [1], "nothing unverified entered the store"
    if rep is not None and "linear" in rep.models:
        assert rep.models["linear"].active == 1


def test_sync_attack_arbitrary_artifact_is_rejected(
    serving_v1, driver: FleetDriver, releases: dict[str, Release], artifacts: ArtifactServer
) -> None:
    _sync, inst = serving_v1
    v2 = releases["v2"]
    artifacts.files[v2.path] = releases["v3"].data  # the mirror serves something else
    driver.publish("dev1", driver.desired("dev1", {"linear": v2.target()}))
    rep = _rejected(driver, "digest_mismatch")
    _assert_still_v1(inst, rep)


def test_sync_attack_arbitrary_artifact_with_matching_hash_is_rejected(
    serving_v1,
    driver: FleetDriver,
    releases: dict[str, Release],
    artifacts: ArtifactServer,
    bundles: dict[str, Path],
    tmp_path: Path,
) -> None:
    """A compromised fleet server points at an evil tar *and* signs its hash: the release
    signature (a different key) still catches the changed model file."""
    _sync, inst = serving_v1
    evil = tmp_path / "evil"
    shutil.copytree(bundles["v2"], evil)
    model = evil / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(evil.iterdir()):
            tar.add(p, arcname=p.name)
    payload = buf.getvalue()
    artifacts.files["evil.tar"] = payload
    import hashlib

    art = Artifact(artifacts.url("evil.tar"), hashlib.sha256(payload).hexdigest(), len(payload))
    target = ModelTarget(2, art, releases["v2"].release)
    driver.publish("dev1", driver.desired("dev1", {"linear": target}))
    rep = _rejected(driver, "digest_mismatch")
    _assert_still_v1(inst, rep)


def test_sync_attack_rollback_is_rejected_unless_operator_signed(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = make_device()
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v2"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2))
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    rep = _rejected(driver, "rollback")
    assert rep.models["linear"].active == 2 and inst.active_version("linear") == 2
    allowed = releases["v1"].target(allow_downgrade=True)
    driver.publish("dev1", driver.desired("dev1", {"linear": allowed}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1))


def test_sync_attack_freeze_expired_desired_state_is_rejected(
    serving_v1, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = serving_v1
    stale = driver.desired(
        "dev1",
        {"linear": releases["v2"].target()},
        now=datetime.now(timezone.utc) - timedelta(days=2),
        expires_in_s=3600,
    )
    driver.publish("dev1", stale)
    rep = _doc_rejected(driver, "expired")
    _assert_still_v1(inst, rep)


def test_sync_attack_mix_and_match_release_is_rejected(
    serving_v1, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = serving_v1
    # v2's artifact with v3's (valid) release envelope
    target = ModelTarget(2, releases["v2"].artifact, releases["v3"].release)
    driver.publish("dev1", driver.desired("dev1", {"linear": target}))
    rep = _rejected(driver, "mix_and_match")
    _assert_still_v1(inst, rep)


def test_sync_attack_endless_data_is_cut_off(
    serving_v1, driver: FleetDriver, releases: dict[str, Release], artifacts: ArtifactServer
) -> None:
    sync, inst = serving_v1
    v2 = releases["v2"]
    artifacts.faults[v2.path] = Fault(extra=10_000_000)
    driver.publish("dev1", driver.desired("dev1", {"linear": v2.target()}))
    rep = _rejected(driver, "endless_data")
    _assert_still_v1(inst, rep)
    assert sum(p.stat().st_size for p in sync.downloads.glob("*") if p.is_file()) == 0


def test_sync_attack_wrong_signer_release_is_rejected(
    serving_v1, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = serving_v1
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v2-wrong-signer"].target()}))
    rep = _rejected(driver, "wrong_signer")
    _assert_still_v1(inst, rep)


def test_sync_attack_wrong_signer_desired_state_is_rejected(
    serving_v1, driver: FleetDriver, releases: dict[str, Release], fleet_keys: FleetKeys
) -> None:
    _sync, inst = serving_v1
    forged = driver.desired(
        "dev1", {"linear": releases["v2"].target()}, signer=[fleet_keys.release]
    )
    driver.publish("dev1", forged)
    rep = _doc_rejected(driver, "wrong_signer")
    _assert_still_v1(inst, rep)


def test_sync_attack_tampered_release_envelope_is_rejected(
    serving_v1, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = serving_v1
    release = json.loads(json.dumps(releases["v2"].release))
    release["signed"]["precision"] = "int8"
    target = ModelTarget(2, releases["v2"].artifact, release)
    driver.publish("dev1", driver.desired("dev1", {"linear": target}))
    rep = _rejected(driver, "bad_signature")
    _assert_still_v1(inst, rep)


def _keyring_chain(keys: FleetKeys, **changes) -> list[dict]:  # type: ignore[no-untyped-def]
    v1 = json.loads(keys.keyring_bytes)
    fields = dict(
        version=2,
        expires=datetime.now(timezone.utc) + timedelta(days=1),
        root_keys=[keys.root],
        release_keys=[keys.release],
        fleet_keys=[keys.fleet],
    )
    fields.update(changes)
    return [v1, sign_keyring(make_keyring(**fields), [keys.root])]


def test_sync_attack_key_compromise_below_threshold_is_rejected(
    serving_v1, driver: FleetDriver, releases: dict[str, Release], fleet_keys: FleetKeys
) -> None:
    sync, inst = serving_v1
    chain = _keyring_chain(
        fleet_keys, release_keys=[fleet_keys.release, generate_key()], threshold=2
    )
    # the attacker holds only release.key: one signature where two are needed
    driver.publish(
        "dev1", driver.desired("dev1", {"linear": releases["v2"].target()}, keyrings=chain)
    )
    rep = _rejected(driver, "threshold")
    _assert_still_v1(inst, rep)
    assert sync.keyring is not None and sync.keyring.version == 2


def test_sync_attack_rotated_out_key_is_rejected(
    serving_v1, driver: FleetDriver, releases: dict[str, Release], fleet_keys: FleetKeys
) -> None:
    sync, inst = serving_v1
    new_release = generate_key()
    chain = _keyring_chain(fleet_keys, release_keys=[new_release])
    # v2 was signed by the old release key, which keyring v2 no longer trusts
    driver.publish(
        "dev1", driver.desired("dev1", {"linear": releases["v2"].target()}, keyrings=chain)
    )
    rep = _rejected(driver, "wrong_signer")
    _assert_still_v1(inst, rep)
    # re-signed by the current key, the same bundle installs
    resigned = ModelTarget(
        2, releases["v2"].artifact, sign(releases["v2"].release["signed"], [new_release])
    )
    driver.publish("dev1", driver.desired("dev1", {"linear": resigned}, keyrings=chain))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2))
    assert (sync.dir / "keyring.json").is_file()


def test_sync_attack_forged_keyring_is_ignored(
    serving_v1, driver: FleetDriver, releases: dict[str, Release], fleet_keys: FleetKeys
) -> None:
    sync, inst = serving_v1
    evil_root = generate_key()
    forged = make_keyring(
        version=2,
        expires=datetime.now(timezone.utc) + timedelta(days=1),
        root_keys=[evil_root],
        release_keys=[evil_root],
        fleet_keys=[fleet_keys.fleet],
    )
    chain = [json.loads(fleet_keys.keyring_bytes), sign_keyring(forged, [evil_root])]
    driver.publish(
        "dev1", driver.desired("dev1", {"linear": releases["v1"].target()}, keyrings=chain)
    )
    driver.wait_report("dev1", lambda rep: rep.seq == 2)
    assert sync.keyring is not None and sync.keyring.version == 1
    assert sync.stats["rejected_keyring"] == 1
    _assert_still_v1(inst)


def test_sync_attack_replayed_old_desired_state_is_rejected(
    serving_v1, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = serving_v1
    old = driver.desired("dev1", {"linear": releases["v2"].target()}, seq=1)
    newer = driver.desired("dev1", {"linear": releases["v1"].target()}, seq=5)
    driver.publish("dev1", newer)
    driver.wait_report("dev1", lambda rep: rep.seq == 5)
    driver.publish("dev1", old)  # seq 1 with a different content: a replay
    rep = _doc_rejected(driver, "replay")
    _assert_still_v1(inst, rep)


def test_sync_attack_replay_after_restart_is_rejected(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    sync, _inst = make_device()
    old = driver.desired("dev1", {"linear": releases["v2"].target()}, seq=1)
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}, seq=4))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1))
    sync.stop()
    restarted, inst = make_device(installer=sync.installer)  # same state directory
    assert restarted.last_seq == 4 and restarted.desired is not None
    driver.publish("dev1", old)
    rep = _doc_rejected(driver, "replay")
    assert rep.seq == 4
    _assert_still_v1(inst)
