"""The fleet server driving real agent processes (``edgeserve agent run`` with ``[fleet]``):
a release rolled out to two agents is served by both, then a second version replaces it."""

from __future__ import annotations

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
