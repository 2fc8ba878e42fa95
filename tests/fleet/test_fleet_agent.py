"""The fleet server driving real agent processes (``edgeserve agent run`` with ``[fleet]``):
a release rolled out to two agents is served by both, then a second version replaces it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.agent import AgentProcess, start_agent
from support.broker import Mosquitto
from support.fleet import (
    FleetServerProcess,
    device_settings,
    register_devices,
    signed_tar,
    wait_for,
)

pytestmark = pytest.mark.slow


def served_version(agent: AgentProcess) -> int | None:
    """The version answering unversioned inference requests."""
    try:
        r = httpx.post(
            f"{agent.url}/v2/models/digits/infer",
            json={
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": np.ones(4).tolist()}
                ]
            },
            timeout=5,
        )
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    return int(r.json()["model_version"])


def test_rollout_to_real_agents(
    tmp_path: Path, fleet_server: FleetServerProcess, fleet_broker: Mosquitto
) -> None:
    assert fleet_server.keys is not None
    creds = register_devices(fleet_server, ["agent-a", "agent-b"], {"hw": "x86"})
    agents = []
    try:
        for device, password in creds:
            fleet = device_settings(
                fleet_server,
                fleet_broker.url,
                device=device,
                password=password,
                telemetry_interval_s=1.0,
            )
            agents.append(start_agent(tmp_path / device, config={"fleet": fleet}))
        with fleet_server.client() as client:
            wait_for(
                lambda: all(d["presence"] == "online" for d in client.devices()),
                30,
                "agents online",
            )
            for version in (1, 2):
                client.upload_release(
                    signed_tar(tmp_path / "rel", fleet_server.keys, version=version)
                )
                rid = client.start_rollout(
                    {"model": "digits", "version": version, "phases": [50, 100], "min_devices": 1}
                )
                wait_for(
                    lambda rid=rid: client.rollout(rid)["status"] == "completed",
                    90,
                    f"rollout of v{version} completed",
                )
                for agent in agents:
                    assert wait_for(
                        lambda a=agent, v=version: served_version(a) == v,
                        30,
                        f"agent serving v{version}",
                    )
            devices = {d["id"]: d for d in client.devices()}
            assert devices["agent-a"]["models"]["digits"] == {"state": "ACTIVE", "active": 2}
            # the requests above come back as telemetry summaries the server understands
            stats = wait_for(
                lambda: (s := client.stats())["ingest"]["received"].get("telemetry") and s,
                30,
                "telemetry from the agents",
            )
            assert stats["ingest"]["dropped_total"] == 0, stats
    finally:
        for agent in agents:
            agent.stop()


def ab_counts(agent: AgentProcess) -> dict[int, int]:
    """The agent's own per-arm counter, ``edgeserve_ab_requests_total``, by version."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{agent.url}/metrics", timeout=5).text
    counts: dict[int, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "edgeserve_ab_requests":
            continue
        for sample in family.samples:
            if sample.name == "edgeserve_ab_requests_total":
                version = int(sample.labels["version"])
                counts[version] = counts.get(version, 0) + int(sample.value)
    return counts


def infer(agent: AgentProcess, n: int) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4}]}
    with httpx.Client(timeout=10) as http:
        for _ in range(n):
            assert http.post(f"{agent.url}/v2/models/digits/infer", json=body).status_code == 200


def test_on_device_experiment_counts_equal_the_agents_counters(
    tmp_path: Path, fleet_server: FleetServerProcess, fleet_broker: Mosquitto
) -> None:
    assert fleet_server.keys is not None
    creds = register_devices(fleet_server, ["ab-1", "ab-2"], {"hw": "x86"})
    agents = []
    try:
        for device, password in creds:
            fleet = device_settings(
                fleet_server,
                fleet_broker.url,
                device=device,
                password=password,
                telemetry_interval_s=1.0,
            )
            # a long telemetry window: the one open when the experiment starts holds requests
            # from before it, which must not be counted
            config = {"fleet": fleet, "telemetry": {"interval_s": 15.0}}
            agents.append(start_agent(tmp_path / device, config=config))
        with fleet_server.client() as client:
            for version in (1, 2):
                client.upload_release(
                    signed_tar(tmp_path / "rel", fleet_server.keys, version=version)
                )
            rid = client.start_rollout({"model": "digits", "version": 1})
            wait_for(lambda: client.rollout(rid)["status"] == "completed", 90, "v1 everywhere")
            for agent in agents:
                wait_for(lambda a=agent: served_version(a) == 1, 30, "agent serving v1")
                infer(agent, 40)  # before the experiment, in the window still open
            eid = client.start_experiment(
                {"model": "digits", "a": 1, "b": 2, "split": 40, "on_device": True}
            )

            def split_applied() -> bool:
                for device, _ in creds:
                    d = client.request("GET", f"/api/v1/devices/{device}")
                    status = (d["reported"].get("models") or {}).get("digits") or {}
                    if d["reported"].get("seq") != d["desired_seq"] or status.get("state") != (
                        "ACTIVE"
                    ):
                        return False
                return True

            wait_for(split_applied, 60, "the split applied on every agent")
            for agent in agents:
                infer(agent, 150)
            counters: dict[int, int] = {}
            for agent in agents:
                for version, n in ab_counts(agent).items():
                    counters[version] = counters.get(version, 0) + n
            assert sum(counters.values()) == 300 and counters.get(2, 0) > 0, counters

            def arms() -> dict[int, int]:
                rep = client.experiment_report(eid)
                return {rep["a"]["version"]: rep["a"]["requests"], 2: rep["b"]["requests"]}

            # once the windows in progress are published (<= 15 s + 1 s), exactly equal
            wait_for(lambda: arms() == counters, 60, f"report counts {counters}", interval_s=1)
            time.sleep(3)  # and they stay so: nothing from before the split arrives later
            assert arms() == counters
    finally:
        for agent in agents:
            agent.stop()
