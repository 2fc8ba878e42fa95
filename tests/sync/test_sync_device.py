"""Device sync end to end over a real Mosquitto and a real HTTP artifact server, with the
stand-in installer (the real agent is exercised in test_sync_agent.py)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from edgeserve.agent.sync.simulator import SimulatedInstaller
from support.artifact_server import ArtifactServer, Fault
from support.broker import Mosquitto
from support.fleet_keys import FleetKeys, make_signed_bundle
from support.fleet_sync import FleetDriver, Release, model_state

from edgeserve.bundle import read_bundle
from edgeserve.protocol import InstallState
from edgeserve.trust import SigningKey
from edgeserve.trust.keydir import load_keyring_chain, rotate_keys


def _wait(pred, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_sync_device_installs_then_upgrades_within_message_budget(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    sync, inst = make_device()
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1))
    before = driver.count("dev1")
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v2"].target()}))
    rep = driver.wait_report("dev1", model_state("linear", "ACTIVE", 2))
    assert inst.active_version("linear") == 2
    assert rep.models["linear"].previous == 1 and rep.seq == 2
    time.sleep(0.3)
    reports = driver.count("dev1") - before
    assert 1 + reports <= 6, f"{reports} reports for one rollout"  # desired + reports
    assert [r.models["linear"].state for r in driver.reports["dev1"][-reports:]] == [
        InstallState.DOWNLOADING,
        InstallState.ACTIVE,
    ]
    assert not list((sync.downloads).glob("*")), "downloads are cleaned up"


def test_sync_device_health_check_failure_rolls_back(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = make_device()
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1))
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v4-bad"].target()}))
    rep = driver.wait_report("dev1", model_state("linear", "ROLLED_BACK"))
    assert rep.models["linear"].active == 1 and rep.models["linear"].reason_code == "health_check"
    assert inst.active_version("linear") == 1


def test_sync_device_duplicate_and_malformed_payloads_are_dropped_and_counted(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    sync, inst = make_device()
    payload = driver.desired("dev1", {"linear": releases["v1"].target()})
    driver.publish("dev1", payload)
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1))
    driver.publish("dev1", payload)  # the same seq again
    driver.publish("dev1", b"\xff not json")
    driver.publish("dev1", b'{"signed": {}, "signatures": "x"}')
    _wait(lambda: sync.stats["dropped_malformed"] == 2 and sync.stats["duplicate_desired"] == 1)
    assert inst.active_version("linear") == 1


def test_sync_device_offline_converges_from_retained_desired(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    driver.publish("dev9", driver.desired("dev9", {"linear": releases["v2"].target()}))
    _sync, inst = make_device("dev9")  # comes online after the release
    driver.wait_report("dev9", model_state("linear", "ACTIVE", 2))
    assert inst.active_version("linear") == 2


def test_sync_device_download_resumes_with_range_after_cut(
    make_device, driver: FleetDriver, releases: dict[str, Release], artifacts: ArtifactServer
) -> None:
    rel = releases["v2"]
    artifacts.faults[rel.path] = Fault(cut_after=1000, cut_times=1)
    make_device()
    driver.publish("dev1", driver.desired("dev1", {"linear": rel.target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2))
    ranges = [r for p, r in artifacts.requests if p == rel.path]
    assert ranges == [None, "bytes=1000-"]


def test_sync_device_retries_a_failing_artifact_server_then_succeeds(
    make_device, driver: FleetDriver, releases: dict[str, Release], artifacts: ArtifactServer
) -> None:
    rel = releases["v2"]
    artifacts.faults[rel.path] = Fault(status=503, status_times=2)
    make_device()
    driver.publish("dev1", driver.desired("dev1", {"linear": rel.target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2))
    assert len([p for p, _ in artifacts.requests if p == rel.path]) == 3


def test_sync_device_on_device_split(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = make_device()
    target = releases["v2"].split_to(releases["v3"], 30)
    driver.publish("dev1", driver.desired("dev1", {"linear": target}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2))
    assert inst.installed_versions("linear") == [2, 3]
    assert inst.current_split("linear") == (2, 3, 30)
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v3"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 3))
    assert inst.current_split("linear") is None


def test_sync_device_walks_root_rotations_delivered_in_desired(
    make_device,
    driver: FleetDriver,
    artifacts: ArtifactServer,
    fleet_keys: FleetKeys,
    tmp_path: Path,
) -> None:
    """A device pinned to root v1 (no keyring file configured) follows two root + release
    rotations shipped in the desired document, then installs a release by the newest key."""
    keys_dir = tmp_path / "keys"
    shutil.copytree(fleet_keys.directory, keys_dir)
    rotate_keys(keys_dir)
    rotate_keys(keys_dir)
    chain = load_keyring_chain(keys_dir)
    bundle = make_signed_bundle(
        tmp_path / "b", [SigningKey.load(keys_dir / "release.key")], version=2
    )
    rel = Release(read_bundle(bundle.path), artifacts, tmp_path, "rotated-v2")
    sync, _inst = make_device(keyring="")
    assert sync.keyring is None
    driver.publish("dev1", driver.desired("dev1", {"linear": rel.target()}, keyrings=chain))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2))
    assert sync.keyring is not None and sync.keyring.version == 3
    saved = json.loads((sync.dir / "keyring.json").read_bytes())
    assert saved["signed"]["version"] == 3


def test_sync_device_converges_through_a_broker_restart(
    make_device,
    driver: FleetDriver,
    releases: dict[str, Release],
    artifacts: ArtifactServer,
    mosquitto: Mosquitto,
) -> None:
    rel = releases["v2"]
    artifacts.faults[rel.path] = Fault(rate=len(rel.data) // 2)  # ~2 s download
    sync, inst = make_device()
    driver.publish("dev1", driver.desired("dev1", {"linear": rel.target()}))
    driver.wait_report("dev1", model_state("linear", "DOWNLOADING"))
    mosquitto.stop()  # the broker dies mid-download; the download itself goes on
    time.sleep(1.0)
    mosquitto.start()
    driver.client.wait_connected(15)
    # the final report was queued by paho while offline (QoS 1) or retained by the broker
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2), timeout_s=30)
    assert inst.active_version("linear") == 2
    assert sync.mqtt.connects >= 2


def test_sync_device_first_install_failing_its_check_never_serves(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = make_device()
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v4-bad"].target()}))
    rep = driver.wait_report("dev1", model_state("linear", "FAILED"))
    assert rep.models["linear"].reason_code == "health_check"
    assert inst.active_version("linear") is None


def test_sync_device_resolves_artifact_paths_against_server_url(
    make_device, driver: FleetDriver, releases: dict[str, Release], artifacts: ArtifactServer
) -> None:
    _sync, inst = make_device(server_url=artifacts.base_url)
    rel = releases["v2"]
    target = rel.target()
    target = replace(target, artifact=replace(target.artifact, url="/" + rel.path))
    driver.publish("dev1", driver.desired("dev1", {"linear": target}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2))
    assert inst.active_version("linear") == 2


def test_sync_device_prunes_to_active_and_previous(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    _sync, inst = make_device()
    for version in (1, 2, 3):
        driver.publish("dev1", driver.desired("dev1", {"linear": releases[f"v{version}"].target()}))
        driver.wait_report("dev1", model_state("linear", "ACTIVE", version))
    assert inst.installed_versions("linear") == [2, 3]


def test_sync_device_unexpected_installer_error_fails_cleanly_and_recovers(
    make_device, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    class Flaky(SimulatedInstaller):
        calls = 0

        def install(self, bundle_dir: Path) -> None:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("disk controller on fire")
            super().install(bundle_dir)

    make_device(installer=Flaky())
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    rep = driver.wait_report("dev1", model_state("linear", "FAILED"))
    assert rep.models["linear"].reason_code == "internal"
    # the state machine is back in a terminal state: the next desired state installs
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1))
