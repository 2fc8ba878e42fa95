"""Fleet sync inside real ``edgeserve agent run`` processes (real ONNX Runtime, store, HTTP):
install and serve, an attack that leaves serving untouched, a health-check rollback, and
``kill -9`` during download and during activation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.agent import AgentProcess, start_agent
from support.artifact_server import ArtifactServer, Fault
from support.broker import Mosquitto
from support.fleet_keys import FleetKeys, make_signed_bundle
from support.fleet_sync import FLEET, FleetDriver, Release, model_state

from edgeserve.bundle import read_bundle
from edgeserve.protocol import PRESENCE_OFFLINE, topics

pytestmark = pytest.mark.slow


def _serving(agent: AgentProcess) -> int:
    """The version that answers an unversioned inference request."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.1] * 4}]}
    resp = httpx.post(f"{agent.url}/v2/models/linear/infer", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["model_version"])


@pytest.fixture
def agents(tmp_path: Path, mosquitto: Mosquitto, fleet_keys: FleetKeys) -> Iterator[Any]:
    started: list[AgentProcess] = []

    def start(device: str = "dev1", **fleet: Any) -> AgentProcess:
        table = {
            "broker": mosquitto.url,
            "fleet": FLEET,
            "device": device,
            "trust_anchor": str(fleet_keys.anchor_path),
            "keyring": str(fleet_keys.keyring_path),
            "retry_backoff_s": 0.2,
            "download_timeout_s": 5,
            "keepalive_s": 2,
        }
        table.update(fleet)
        agent = start_agent(tmp_path / "state" / device, config={"fleet": table})
        started.append(agent)
        agent.wait_ready(60)
        return agent

    yield start
    for agent in started:
        agent.stop()


def _install_v1(agents: Any, driver: FleetDriver, releases: dict[str, Release]) -> AgentProcess:
    agent = agents()
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1), timeout_s=60)
    assert _serving(agent) == 1
    return agent


def test_sync_agent_installs_upgrades_and_serves(
    agents: Any, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    agent = _install_v1(agents, driver, releases)
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v2"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2), timeout_s=60)
    assert _serving(agent) == 2
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v3"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 3), timeout_s=60)
    assert _serving(agent) == 3
    # pruned: the active version and the rollback target stay on disk
    assert sorted(p.name for p in (agent.state_dir / "models" / "linear").glob("[0-9]*")) == [
        "2",
        "3",
    ]


def test_sync_agent_attack_arbitrary_artifact_keeps_serving_version(
    agents: Any, driver: FleetDriver, releases: dict[str, Release], artifacts: ArtifactServer
) -> None:
    agent = _install_v1(agents, driver, releases)
    artifacts.files[releases["v2"].path] = releases["v3"].data
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v2"].target()}))
    rep = driver.wait_report("dev1", model_state("linear", "REJECTED"), timeout_s=60)
    assert rep.models["linear"].reason_code == "digest_mismatch"
    assert _serving(agent) == 1
    assert not (agent.state_dir / "models" / "linear" / "2").exists()


def test_sync_agent_warmup_failure_keeps_serving_version(
    agents: Any,
    driver: FleetDriver,
    releases: dict[str, Release],
    fleet_keys: FleetKeys,
    artifacts: ArtifactServer,
    tmp_path: Path,
) -> None:
    """A validly signed version whose sample inputs make it produce NaN fails the agent's
    warm-up before the switch: FAILED, and the old version never stopped serving. (The
    post-activation health check and ROLLED_BACK are covered with the stand-in runtime in
    test_sync_device.py, since the real warm-up runs the same samples first.)"""
    agent = _install_v1(agents, driver, releases)
    nan = np.full((2, 4), np.nan, dtype=np.float32)
    bad = make_signed_bundle(tmp_path / "bad", [fleet_keys.release], version=5, sample=nan)
    rel = Release(read_bundle(bad.path), artifacts, tmp_path, "v5-nan")
    driver.publish("dev1", driver.desired("dev1", {"linear": rel.target()}))
    rep = driver.wait_report("dev1", model_state("linear", "FAILED"), timeout_s=60)
    assert rep.models["linear"].reason_code == "activation"
    assert "NaN" in (rep.models["linear"].error or "")
    assert rep.models["linear"].active == 1
    assert _serving(agent) == 1


def test_sync_agent_kill_9_during_download_resumes_and_converges(
    agents: Any,
    driver: FleetDriver,
    releases: dict[str, Release],
    artifacts: ArtifactServer,
    mosquitto: Mosquitto,
) -> None:
    agent = _install_v1(agents, driver, releases)
    offline = _watch_presence(driver, mosquitto)
    v2 = releases["v2"]
    # ~4 s for the whole tar, on the first request and on the resumed one
    artifacts.faults[v2.path] = Fault(rate=len(v2.data) // 4, rate_times=2)
    driver.publish("dev1", driver.desired("dev1", {"linear": v2.target()}))
    part = agent.state_dir / "downloads" / f"{v2.artifact.sha256}.part"
    _wait(lambda: part.exists() and part.stat().st_size > 0, 30)
    t0 = time.monotonic()
    assert _serving(agent) == 1  # serving does not wait on the download
    assert time.monotonic() - t0 < 1.0
    agent.kill()
    assert 0 < part.stat().st_size < v2.artifact.size
    _wait(lambda: offline.is_set(), 15)  # the broker published the Last Will
    again = agents()
    assert _serving(again) == 1  # the old version serves at once after the restart
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2), timeout_s=60)
    assert _serving(again) == 2
    ranges = [r for p, r in artifacts.requests if p == v2.path]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")


def test_sync_agent_kill_9_during_activation_restarts_on_valid_version(
    agents: Any, driver: FleetDriver, releases: dict[str, Release]
) -> None:
    agent = _install_v1(agents, driver, releases)
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v2"].target()}))
    staged = agent.state_dir / "models" / "linear" / "2"
    _wait(staged.exists, 30, interval=0.002)  # STAGED: activation starts now
    agent.kill()
    again = agents()
    assert _serving(again) in (1, 2)  # a whole version, old or new, never a half one
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 2), timeout_s=60)
    assert _serving(again) == 2


def _watch_presence(driver: FleetDriver, mosquitto: Mosquitto) -> Any:
    import threading

    offline = threading.Event()

    def on_presence(topic: str, payload: bytes, retained: bool) -> None:
        if payload == PRESENCE_OFFLINE and not retained:
            offline.set()

    driver.client.subscribe(topics("es/", FLEET, "dev1").presence, on_presence)
    time.sleep(0.2)
    return offline


def _wait(pred: Any, timeout: float, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


def test_sync_agent_bad_fleet_section_is_one_line_error(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    fleet = {"broker": mosquitto.url, "device": "dev1", "trust_anchor": str(tmp_path / "no.json")}
    agent = start_agent(tmp_path / "state", config={"fleet": fleet}, wait=False)
    try:
        code = agent.process.wait(60)
    finally:
        agent.kill()
    lines = [ln for ln in agent.log().splitlines() if ln.strip()]
    assert code == 2, agent.log()
    assert "trust anchor" in lines[-1] and "Traceback" not in agent.log()


def test_sync_agent_clean_stop_publishes_offline_presence(
    agents: Any, driver: FleetDriver, mosquitto: Mosquitto
) -> None:
    agent = agents()
    seen: list[tuple[bytes, bool]] = []
    driver.client.subscribe(
        topics("es/", FLEET, "dev1").presence, lambda t, p, r: seen.append((p, r))
    )
    _wait(lambda: (b"online", True) in seen, 10)  # retained "online" from the running agent
    assert agent.stop() == 0
    _wait(lambda: (PRESENCE_OFFLINE, False) in seen, 10)
