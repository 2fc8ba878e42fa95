"""End to end on real parts: Mosquitto, the fleet server as a process, and simulated devices
that run the real device sync (MQTT, signed desired state, HTTP download with Range, file
checks, install state machine) with a stand-in runtime (edgeserve.agent.sync.simulator)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from edgeserve.agent.sync.simulator import SimulatedDevice, SimulatedFleet
from support.broker import Mosquitto
from support.fleet import (
    TOKEN,
    FleetServerProcess,
    device_settings,
    register_devices,
    signed_tar,
    wait_for,
)

from edgeserve.protocol import Telemetry, encode, topics

pytestmark = pytest.mark.slow
N = 10
Factory = Callable[..., SimulatedFleet]


@pytest.fixture
def sims(
    tmp_path: Path, fleet_server: FleetServerProcess, fleet_broker: Mosquitto
) -> Iterator[Factory]:
    """Start simulated fleets of registered devices; all are stopped after the test."""
    started: list[SimulatedFleet] = []

    def make(creds: list[tuple[str, str]], state: str = "devices") -> SimulatedFleet:
        fleet = SimulatedFleet(
            [SimulatedDevice(d, p) for d, p in creds],
            tmp_path / state,
            device_settings(fleet_server, fleet_broker.url),
            workers=4,
        )
        fleet.start()
        fleet.wait_connected(30)
        started.append(fleet)
        return fleet

    yield make
    for fleet in started:
        fleet.stop()


def cli(server: FleetServerProcess, *args: str) -> str:
    """Run ``edgeserve fleet ...`` as the operator would."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edgeserve.cli import main; main()",
            "fleet",
            "--server",
            server.url,
            "--token",
            TOKEN,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def scrape(server: FleetServerProcess) -> Callable[..., float | None]:
    """The server's /metrics as ``value(sample_name, **labels)`` (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return lambda name, **labels: samples.get((name, frozenset(labels.items())))


def release(server: FleetServerProcess, tmp: Path, version: int, **kw: object) -> None:
    assert server.keys is not None
    with server.client() as client:
        client.upload_release(signed_tar(tmp / "releases", server.keys, version=version, **kw))


def converge(fleet: SimulatedFleet, version: int, timeout_s: float = 60) -> None:
    wait_for(
        lambda: set(fleet.active_versions("digits").values()) == {version},
        timeout_s,
        f"every device active on v{version}",
    )


def finished(server: FleetServerProcess, rid: int, status: str, timeout_s: float = 60) -> dict:
    with server.client() as client:
        return wait_for(
            lambda: (st := client.rollout(rid))["status"] == status and st,
            timeout_s,
            f"rollout {rid} {status}",
        )


def test_three_phase_rollout_completes(
    fleet_server: FleetServerProcess, sims: Factory, tmp_path: Path
) -> None:
    creds = register_devices(
        fleet_server, [f"pi-{i:02d}" for i in range(N)], {"hw": "rpi5", "site": "lyon"}
    )
    register_devices(fleet_server, ["jetson-01"], {"hw": "jetson"})  # not selected
    fleet = sims(creds)
    release(fleet_server, tmp_path, 1)
    out = cli(
        fleet_server,
        "rollout",
        "start",
        "--model",
        "digits",
        "--version",
        "1",
        "--selector",
        "hw=rpi5",
        "--phases",
        "20,50,100",
        "--soak",
        "1s",
        "--max-failure-pct",
        "5",
        "--min-devices",
        "3",
        "--max-latency-regression",
        "20%",
    )
    assert "rollout 1 started" in out
    st = finished(fleet_server, 1, "completed")
    converge(fleet, 1)
    assert st["counts"]["active"] == N and st["counts"]["failed"] == 0
    phases = [e for e in st["audit"] if e["action"] == "rollout.next_phase"]
    assert len(phases) == 2 and all("soaked" in e["reason"] for e in phases)
    status = json.loads(cli(fleet_server, "rollout", "status", "--json"))
    assert status["status"] == "completed" and status["counts"]["active"] == N
    table = cli(fleet_server, "rollout", "status")
    assert "completed" in table and "failure" in table
    with fleet_server.client() as client:
        devices = {d["id"]: d for d in client.devices()}
    assert devices["jetson-01"]["models"] == {}
    assert devices["pi-00"]["presence"] == "online"
    assert devices["pi-00"]["models"]["digits"] == {"state": "ACTIVE", "active": 1}


def test_failing_version_is_rolled_back_automatically(
    fleet_server: FleetServerProcess, sims: Factory, tmp_path: Path
) -> None:
    creds = register_devices(fleet_server, [f"d{i:02d}" for i in range(N)], {"hw": "x"})
    fleet = sims(creds)
    release(fleet_server, tmp_path, 1)
    release(fleet_server, tmp_path, 2, simulate="fail_health")
    with fleet_server.client() as client:
        client.start_rollout({"model": "digits", "version": 1})
        finished(fleet_server, 1, "completed")
        converge(fleet, 1)
        rid = client.start_rollout(
            {
                "model": "digits",
                "version": 2,
                "phases": [40, 100],
                "max_failure_pct": 10,
                "min_devices": 2,
            }
        )
        st = finished(fleet_server, rid, "paused")
    assert st["reason"].startswith("gate failure failed")
    assert st["counts"]["reverted"] >= 2 and st["counts"]["active"] == 0
    converge(fleet, 1)  # every device serves the baseline
    actions = {e["action"] for e in st["audit"]}
    assert {"rollout.gate_failed", "rollout.revert"} <= actions
    # the devices never left v1 for good: v2 failed its health check and was rolled back
    reverted = [d["device"] for d in st["devices"] if d["state"] == "reverted"]
    assert all(fleet.installers[d].active_version("digits") == 1 for d in reverted)
    # ... and with prune = true the failed v2 leaves their stores once the revert arrives
    wait_for(
        lambda: all(fleet.installers[d].installed_versions("digits") == [1] for d in reverted),
        30,
        "the failed v2 pruned from every reverted device",
    )

    # the audit trail says which device failed and why, also after the revert
    status = json.loads(cli(fleet_server, "rollout", "status", str(rid), "--json"))
    failed = {f["device"]: f for f in status["failures"]}
    assert failed and set(failed) <= set(reverted)
    for device, f in failed.items():
        assert f["state"] == "ROLLED_BACK" and f["reason_code"] == "health_check"
        assert "simulated health check failure" in f["error"]
        entry = next(d for d in status["devices"] if d["device"] == device)
        assert entry["state"] == "reverted"
        assert entry["outcome"]["reason_code"] == "health_check"
    audit = json.loads(cli(fleet_server, "audit", "--rollout", str(rid), "--json"))
    device_failed = [e for e in audit if e["action"] == "rollout.device_failed"]
    assert {e["detail"]["device"] for e in device_failed} == set(failed)
    assert all(e["detail"]["reason_code"] == "health_check" for e in device_failed)
    assert all(e["detail"]["phase"] == 40 for e in device_failed)
    # ... and Prometheus sees the same: the paused rollout, its reverted devices, the decision
    value = scrape(fleet_server)
    key = {"rollout": str(rid), "model": "digits", "version": "2", "status": "paused"}
    assert value("edgeserve_fleet_rollout_phase_percent", **key) == 40
    assert value("edgeserve_fleet_rollout_devices", **key, state="reverted") == len(reverted)
    assert value("edgeserve_fleet_gate_decisions_total", decision="gate_failed") == 1
    assert value("edgeserve_fleet_devices", presence="online") == N
    assert value("edgeserve_fleet_broker_connected") == 1
    assert (value("edgeserve_fleet_mqtt_received_total", kind="reported") or 0) > 0
    health = httpx.get(f"{fleet_server.url}/healthz", timeout=5).json()
    assert health["broker"]["state"] == "connected" and health["mqtt_connected"]
    text = cli(fleet_server, "audit", "--rollout", str(rid))
    some = next(iter(failed))
    assert f"device {some}" in text and "reason_code health_check" in text
    assert "simulated health check failure" in text


def test_experiment_reports_a_verdict(
    fleet_server: FleetServerProcess, sims: Factory, tmp_path: Path
) -> None:
    creds = register_devices(fleet_server, [f"e{i:02d}" for i in range(N)], {"hw": "x"})
    fleet = sims(creds)
    release(fleet_server, tmp_path, 1)
    release(fleet_server, tmp_path, 2)
    out = cli(
        fleet_server,
        "experiment",
        "start",
        "--model",
        "digits",
        "--a",
        "1",
        "--b",
        "2",
        "--split",
        "50",
    )
    assert "experiment 1 started" in out
    wait_for(
        lambda: set(fleet.active_versions("digits").values()) == {1, 2}, 60, "both arms active"
    )
    now = time.time()
    for device, sync in fleet.devices.items():  # each device reports what it served
        version = fleet.installers[device].active_version("digits")
        assert version is not None
        base = 6.0 if version == 2 else 9.0  # v2 is faster
        summaries = tuple(
            {
                "kind": "summary",
                "model": "digits",
                "version": version,
                "window_start": now - 0.1 * (k + 1),
                "window_end": now - 0.1 * k,
                "requests": 400,
                "errors": {},
                "error_count": 1,
                "latency_ms": {"p50": base + 0.2 * (k % 3), "p95": base * 2, "p99": base * 3},
            }
            for k in range(4)
        )
        sync.mqtt.publish(
            topics("es/", "test", device).telemetry, encode(Telemetry(device, "now", summaries))
        )
    with fleet_server.client() as client:
        report = wait_for(
            lambda: (r := client.experiment_report(1))["verdict"] != "no difference yet" and r,
            30,
            "a verdict",
        )
    assert report["verdict"] == "b better"
    assert report["a"]["requests"] + report["b"]["requests"] == N * 1600
    assert report["latency_p50_diff_ci_ms"][1] < 0
    text = cli(fleet_server, "experiment", "report")
    assert "b better" in text
    assert "rollout 1 started for the winner" in cli(fleet_server, "experiment", "promote")
    converge(fleet, 2)  # the winner everywhere
    finished(fleet_server, 1, "completed")


def test_offline_device_converges_when_it_comes_back(
    fleet_server: FleetServerProcess, sims: Factory, tmp_path: Path
) -> None:
    creds = register_devices(fleet_server, [f"o{i:02d}" for i in range(4)], {"hw": "x"})
    online = sims(creds[:3])
    release(fleet_server, tmp_path, 1)
    with fleet_server.client() as client:
        rid = client.start_rollout({"model": "digits", "version": 1})
        converge(online, 1)
        time.sleep(1.0)
        st = client.rollout(rid)
        assert st["status"] == "running" and st["counts"]["installing"] == 1
        late = sims(creds[3:], state="late")  # the device comes back: retained desired state
        converge(late, 1)
        finished(fleet_server, rid, "completed")


def test_broker_restart_mid_rollout(
    fleet_server: FleetServerProcess, fleet_broker: Mosquitto, sims: Factory, tmp_path: Path
) -> None:
    creds = register_devices(fleet_server, [f"b{i:02d}" for i in range(N)], {"hw": "x"})
    fleet = sims(creds)
    release(fleet_server, tmp_path, 1)
    with fleet_server.client() as client:
        rid = client.start_rollout(
            {"model": "digits", "version": 1, "phases": [30, 100], "soak": "2s"}
        )
        wait_for(lambda: client.rollout(rid)["counts"]["active"] >= 1, 30, "first phase")
        fleet_broker.stop(kill=True)
        time.sleep(1.5)
        fleet_broker.start()
        converge(fleet, 1, timeout_s=90)
        st = finished(fleet_server, rid, "completed", timeout_s=60)
        assert st["counts"]["active"] == N
        assert wait_for(lambda: client.stats()["mqtt_connected"], 30, "server reconnected")


def test_on_device_experiment_sets_the_split(
    fleet_server: FleetServerProcess, sims: Factory, tmp_path: Path
) -> None:
    creds = register_devices(fleet_server, [f"s{i:02d}" for i in range(3)], {"hw": "x"})
    fleet = sims(creds)
    release(fleet_server, tmp_path, 1)
    release(fleet_server, tmp_path, 2)
    out = cli(
        fleet_server,
        "experiment",
        "start",
        "--model",
        "digits",
        "--a",
        "1",
        "--b",
        "2",
        "--split",
        "30",
        "--on-device",
    )
    assert "(on device)" in out
    wait_for(
        lambda: all(i.current_split("digits") == (1, 2, 30) for i in fleet.installers.values()),
        60,
        "every device splitting 30 % to v2",
    )
    assert set(fleet.active_versions("digits").values()) == {1}
    assert all(set(i.installed_versions("digits")) == {1, 2} for i in fleet.installers.values())


def test_server_restart_mid_rollout(
    fleet_server: FleetServerProcess, sims: Factory, tmp_path: Path
) -> None:
    creds = register_devices(fleet_server, [f"r{i:02d}" for i in range(6)], {"hw": "x"})
    fleet = sims(creds)
    release(fleet_server, tmp_path, 1)
    with fleet_server.client() as client:
        rid = client.start_rollout(
            {"model": "digits", "version": 1, "phases": [30, 100], "soak": "3s"}
        )
        wait_for(lambda: client.rollout(rid)["counts"]["active"] >= 1, 30, "first phase")
    fleet_server.stop()  # SIGTERM; the store is on disk
    fleet_server.start()
    converge(fleet, 1)
    st = finished(fleet_server, rid, "completed")
    assert st["counts"]["active"] == 6
