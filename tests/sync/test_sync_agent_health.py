"""The post-activation health check in a real ``edgeserve agent run`` process (real ONNX
Runtime, store, HTTP, Mosquitto): a signed version that loads and warms up but computes
something other than the outputs recorded in its ``sample.npz`` is activated, fails the
health check, and is rolled back on the device; it is not retried."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from edgeserve.agent.store import ModelStore
from support.agent import AgentProcess, linear_reference, start_agent
from support.artifact_server import ArtifactServer
from support.broker import Mosquitto
from support.fleet_keys import FleetKeys
from support.fleet_sync import FLEET, FleetDriver, Release, model_state
from support.models import make_onnx_linear

from edgeserve.bundle import Bundle, read_bundle, write_bundle
from edgeserve.bundle.manifest import Manifest, TensorSpec
from edgeserve.trust import sign_release

pytestmark = pytest.mark.slow

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0]], dtype=np.float32)


def _bundle_with_references(
    directory: Path, fleet_keys: FleetKeys, *, version: int, seed: int, expected_seed: int
) -> Bundle:
    """A signed linear model (weights from ``seed``) whose sample.npz records the outputs of
    the model with weights from ``expected_seed``, as the converter lays them out."""
    model = make_onnx_linear(directory.parent / f".health-{version}.onnx", seed=seed)
    buf = io.BytesIO()
    np.savez(buf, **{"x": X, "expected:y": linear_reference(X, seed=expected_seed)})
    manifest = Manifest(
        name="linear",
        version=version,
        format="onnx",
        precision="fp32",
        target="onnx-cpu-fp32",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("y", "FP32", (-1, 3)),),
        validation={"health_check": {"tolerance": 0.01}},
    )
    write_bundle(
        directory,
        manifest,
        {"model.onnx": (model, "model"), "sample.npz": (buf.getvalue(), "sample")},
    )
    sign_release(directory, [fleet_keys.release])
    return read_bundle(directory)


def _serving(agent: AgentProcess) -> tuple[int, list[float]]:
    """(version, outputs) of an unversioned inference request."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.1] * 4}]}
    resp = httpx.post(f"{agent.url}/v2/models/linear/infer", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    return int(doc["model_version"]), doc["outputs"][0]["data"]


@pytest.fixture
def agents(
    tmp_path: Path, mosquitto: Mosquitto, fleet_keys: FleetKeys
) -> Iterator[Callable[[], AgentProcess]]:
    """Starts ``edgeserve agent run`` for device dev1 (same state directory each time)."""
    started: list[AgentProcess] = []
    table: dict[str, Any] = {
        "broker": mosquitto.url,
        "fleet": FLEET,
        "device": "dev1",
        "trust_anchor": str(fleet_keys.anchor_path),
        "keyring": str(fleet_keys.keyring_path),
        "retry_backoff_s": 0.2,
        "download_timeout_s": 5,
        "keepalive_s": 2,
    }

    def start() -> AgentProcess:
        process = start_agent(tmp_path / "state" / "dev1", config={"fleet": table}, wait=False)
        started.append(process)
        process.wait_ready(60)
        return process

    yield start
    for process in started:
        process.stop()


def test_sync_agent_health_check_failure_after_activation_rolls_back(
    agents: Callable[[], AgentProcess],
    driver: FleetDriver,
    releases: dict[str, Release],
    fleet_keys: FleetKeys,
    artifacts: ArtifactServer,
    tmp_path: Path,
) -> None:
    agent = agents()
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1), timeout_s=60)
    assert _serving(agent)[0] == 1

    # v2 runs and gives finite outputs (warm-up passes), but not the ones recorded for it
    bad = _bundle_with_references(tmp_path / "v2", fleet_keys, version=2, seed=2, expected_seed=7)
    rel = Release(bad, artifacts, tmp_path, "v2-wrong-outputs")
    driver.publish("dev1", driver.desired("dev1", {"linear": rel.target()}))
    rep = driver.wait_report("dev1", model_state("linear", "ROLLED_BACK"), timeout_s=60)
    status = rep.models["linear"]
    assert status.reason_code == "health_check"
    assert "differs from the reference" in (status.error or ""), status.error
    assert status.active == 1 and status.target == 2

    # v1 is active in the store and answers over HTTP with v1's outputs; v2 really was
    # activated before the check (the store's rollback pointer names it)
    store = ModelStore(agent.state_dir)
    assert store.active_version("linear") == 1
    assert store.previous_active("linear") == 2
    version, outputs = _serving(agent)
    assert version == 1
    np.testing.assert_allclose(
        outputs, linear_reference(np.full((1, 4), 0.1, np.float32), seed=1)[0], rtol=1e-5
    )

    # not retried: with a 0.2 s retry backoff a loop would show within seconds
    reports_after = driver.count("dev1")
    time.sleep(3.0)
    assert driver.count("dev1") == reports_after, [
        r.to_dict() for r in driver.reports["dev1"][reports_after:]
    ]
    assert (store.active_version("linear"), store.previous_active("linear")) == (1, 2)
    assert _serving(agent)[0] == 1

    # nor after a restart with the same desired state: the device reports the saved outcome
    # and never activates v2 again (no DOWNLOADING, v1 serving from the start)
    assert agent.stop() == 0
    before = driver.count("dev1")
    agent = agents()
    assert _serving(agent)[0] == 1
    rep = driver.wait_report("dev1", lambda r: any(r is x for x in driver.reports["dev1"][before:]))
    assert rep.models["linear"].state.value == "ROLLED_BACK"
    assert rep.models["linear"].reason_code == "health_check"
    time.sleep(2.0)
    states = [r.models["linear"].state.value for r in driver.reports["dev1"][before:]]
    assert "DOWNLOADING" not in states and set(states) <= {"ROLLED_BACK"}, states
    assert _serving(agent)[0] == 1

    # a version whose outputs match its references passes the same check and serves
    good = _bundle_with_references(tmp_path / "v3", fleet_keys, version=3, seed=3, expected_seed=3)
    rel3 = Release(good, artifacts, tmp_path, "v3-good")
    driver.publish("dev1", driver.desired("dev1", {"linear": rel3.target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 3), timeout_s=60)
    assert _serving(agent)[0] == 3
    assert ModelStore(agent.state_dir).active_version("linear") == 3


def test_sync_agent_kill_9_between_activation_and_health_check_rolls_back_on_restart(
    agents: Callable[[], AgentProcess],
    driver: FleetDriver,
    releases: dict[str, Release],
    fleet_keys: FleetKeys,
    artifacts: ArtifactServer,
    tmp_path: Path,
) -> None:
    """Killed after the store switched to the bad v2 but before its health check finished:
    the restarted agent serves v2 for a moment (the store says so) but must not report it
    ACTIVE; it runs the pending check, rolls back to v1 and reports ROLLED_BACK."""
    agent = agents()
    driver.publish("dev1", driver.desired("dev1", {"linear": releases["v1"].target()}))
    driver.wait_report("dev1", model_state("linear", "ACTIVE", 1), timeout_s=60)
    bad = _bundle_with_references(tmp_path / "v2", fleet_keys, version=2, seed=2, expected_seed=7)
    rel = Release(bad, artifacts, tmp_path, "v2-wrong-outputs")
    store = ModelStore(agent.state_dir)
    driver.publish("dev1", driver.desired("dev1", {"linear": rel.target()}))
    deadline = time.monotonic() + 60
    while store.active_version("linear") != 2:  # the switch; load, warm-up and check follow
        assert time.monotonic() < deadline, "v2 never activated"
        time.sleep(0.001)
    agent.kill()
    assert store.active_version("linear") == 2, "killed too late: the rollback already ran"
    before = driver.count("dev1")

    agent = agents()
    rep = driver.wait_report("dev1", model_state("linear", "ROLLED_BACK", 1), timeout_s=60)
    assert rep.models["linear"].reason_code == "health_check"
    assert (store.active_version("linear"), store.previous_active("linear")) == (1, 2)
    assert _serving(agent)[0] == 1
    after = [r.models.get("linear") for r in driver.reports["dev1"][before:]]
    assert not any(s is not None and s.state.value == "ACTIVE" and s.active == 2 for s in after)
