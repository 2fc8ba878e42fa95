"""Fleet sync with ``[server] processes = 2`` (real agent processes, real Mosquitto, real
signatures): exactly one serving process holds the MQTT session, and the version it installs
is served by every process."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from support.agent import start_agent
from support.broker import Mosquitto
from support.fleet_keys import FleetKeys
from support.fleet_sync import FLEET, FleetDriver, Release, model_state

pytestmark = pytest.mark.slow

DEVICE = "dev-processes"  # a client id no other test uses on this broker
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[8:-1])
    return inodes


def _connected_to(port: int) -> set[str]:
    """Inodes of established TCP sockets whose remote port is ``port`` (/proc/net/tcp)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if remote_port == port and cols[3] == "01":  # 01 = ESTABLISHED
                out.add(cols[9])
    return out


def test_sync_agent_processes_one_process_runs_fleet_sync(
    tmp_path: Path,
    mosquitto: Mosquitto,
    fleet_keys: FleetKeys,
    driver: FleetDriver,
    releases: dict[str, Release],
) -> None:
    table = {
        "broker": mosquitto.url,
        "fleet": FLEET,
        "device": DEVICE,
        "trust_anchor": str(fleet_keys.anchor_path),
        "keyring": str(fleet_keys.keyring_path),
        "retry_backoff_s": 0.2,
        "keepalive_s": 2,
    }
    config = {"fleet": table, "poll_interval_s": 0.1, "server": {"processes": 2}}
    with start_agent(tmp_path / "state", config=config, wait=False) as agent:
        driver.publish(DEVICE, driver.desired(DEVICE, {"linear": releases["v1"].target()}))
        driver.wait_report(DEVICE, model_state("linear", "ACTIVE", 1), timeout_s=60)
        agent.wait_ready(60)
        driver.publish(DEVICE, driver.desired(DEVICE, {"linear": releases["v2"].target()}))
        driver.wait_report(DEVICE, model_state("linear", "ACTIVE", 2), timeout_s=60)

        deadline = time.monotonic() + 30
        while " processes 2 models [" not in agent.log():  # the supervisor's ready line
            assert time.monotonic() < deadline, agent.log()
            time.sleep(0.05)
        kids = _children(agent.process.pid)
        assert len(kids) == 2
        # sampled for 3 s: two sessions under one client id would take turns being kicked
        broker_port = int(mosquitto.url.rsplit(":", 1)[1])
        ever: set[int] = set()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            mqtt = _connected_to(broker_port)
            ever |= {pid for pid in (*kids, agent.process.pid) if _socket_inodes(pid) & mqtt}
            time.sleep(0.05)
        assert len(ever) == 1 and ever <= set(kids), f"broker connections from {ever} of {kids}"
        log = (mosquitto.workdir / "mosquitto.log").read_text(errors="replace")
        assert f"Client {DEVICE} already connected" not in log

        # the version installed by the syncing process is served by both (store watch)
        deadline = time.monotonic() + 10
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = set()
            for _ in range(30):
                with httpx.Client(timeout=10) as http:
                    resp = http.post(f"{agent.url}/v2/models/linear/infer", json=BODY)
                    assert resp.status_code == 200, resp.text
                    seen.add(resp.json()["model_version"])
            if seen == {"2"}:
                break
            time.sleep(0.2)
        assert seen == {"2"}
