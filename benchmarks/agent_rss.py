"""Idle RSS of the agent without and with fleet sync (a Mosquitto broker and an artifact server
on loopback; with fleet sync a second model arrives as a signed release), alternated."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from agent_proc import CLI, free_port, rss_mb, stop, wait_ready


def _agent_rss(
    config: dict, requests: list[tuple[str, bytes]], wait_for=None, buffer_open: bool = False
) -> float:
    """Start ``agent run --config``, let ``wait_for`` run, warm up, idle, return VmRSS MB.

    With ``buffer_open`` the telemetry buffer must have been opened by then (its file exists:
    the agent opens it on first use, for a window that counted requests or for fleet sync's
    upload), so the figure includes it.
    """
    from support.agent import write_toml

    port = free_port()
    config = {**config, "server": {"port": port}}
    path = write_toml(Path(config["state_dir"]).parent / f"agent-{port}.toml", config)
    proc = subprocess.Popen(
        [*CLI, "agent", "run", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port, proc, timeout=60)
        if wait_for is not None:
            wait_for()
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(50):
                for url, body in requests:
                    resp = client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
                    resp.raise_for_status()
        time.sleep(1.5)
        rss = rss_mb(proc.pid)
        if buffer_open and not (Path(config["state_dir"]) / "telemetry.jsonl").exists():
            raise RuntimeError("the telemetry buffer was not opened before the measurement")
        return rss
    finally:
        stop(proc)


def fleet_rss(work: Path, bundle: Path, model: str, shape: tuple[int, ...], rounds: int = 3):
    """Idle RSS without and with fleet sync, alternated ``rounds`` times.

    Both agents serve ``model`` (installed locally) and ``linear``: installed locally without
    fleet sync; with it, published as a signed release that fleet sync downloads, verifies and
    activates (so httpx, paho-mqtt and cryptography have all done their work).

    The agent opens its telemetry buffer on first use, so without fleet sync it is
    measured twice: before its first telemetry window (``interval_s`` 60 s by default) and
    after one (``interval_s = 1``: the window that counted the requests opens the buffer). With
    fleet sync the upload (``telemetry_interval_s = 1`` here, 10 s by default) opens it.
    """
    import json

    from edgeserve.agent.store import ModelStore
    from support.artifact_server import ArtifactServer
    from support.broker import Mosquitto
    from support.fleet_keys import make_fleet_keys, make_signed_bundle
    from support.fleet_sync import FLEET, FleetDriver, Release, model_state

    from edgeserve.bundle import read_bundle

    keys = make_fleet_keys(work / "keys")
    linear = make_signed_bundle(work / "linear", [keys.release], name="linear", seed=1)
    broker = Mosquitto(work / "broker").start()
    artifacts = ArtifactServer().start()
    release = Release(read_bundle(linear.path), artifacts, work, "linear-v1")
    driver = FleetDriver(broker.url, keys)
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    rows = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(shape),
                    "datatype": "FP32",
                    "data": rows.ravel().tolist(),
                }
            ]
        }
    ).encode()
    linear_body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()
    requests = [(f"/v2/models/{model}/infer", body), ("/v2/models/linear/infer", linear_body)]
    out: dict[str, list[float]] = {"off": [], "window": [], "on": []}
    try:
        for i in range(rounds):
            state = work / f"rss-off-{i}"
            ModelStore(state).install(bundle)
            ModelStore(state).install(linear.path)
            out["off"].append(_agent_rss({"state_dir": str(state)}, requests))
            state = work / f"rss-window-{i}"
            ModelStore(state).install(bundle)
            ModelStore(state).install(linear.path)
            window = {"state_dir": str(state), "telemetry": {"interval_s": 1}}
            out["window"].append(_agent_rss(window, requests, buffer_open=True))
            state = work / f"rss-on-{i}"
            ModelStore(state).install(bundle)
            device = f"bench-{i}"
            fleet = {
                "broker": broker.url,
                "fleet": FLEET,
                "device": device,
                "trust_anchor": str(keys.anchor_path),
                "telemetry_interval_s": 1,
            }

            def install_through_fleet(device: str = device) -> None:
                keyring = json.loads(keys.keyring_bytes)
                desired = driver.desired(device, {"linear": release.target()}, keyrings=[keyring])
                driver.publish(device, desired)
                driver.wait_report(device, model_state("linear", "ACTIVE", 1), timeout_s=60)

            rss = _agent_rss(
                {"state_dir": str(state), "fleet": fleet},
                requests,
                wait_for=install_through_fleet,
                buffer_open=True,
            )
            out["on"].append(rss)
    finally:
        driver.close()
        artifacts.stop()
        broker.stop()
    return out


def print_fleet_rss(work: Path, bundle: Path, model: str, shape: tuple[int, ...]) -> None:
    rss = fleet_rss(work / "fleet-rss", bundle, model, shape)
    print(
        f"\nidle RSS, models {model} + linear, after 50 requests each "
        f"(median of {len(rss['off'])}, alternated, min-max):"
    )
    rows = (
        ("off", "without fleet sync"),
        ("window", "  after its first telemetry window"),
        ("on", "with fleet sync"),
    )
    for key, label in rows:
        values = rss[key]
        print(
            f"  {label:<40} {statistics.median(values):5.1f} MB  "
            f"({min(values):.1f}-{max(values):.1f})"
        )
    print(
        "  (with: linear installed through fleet sync from a signed release; the telemetry"
        " buffer is open after the first window and with fleet sync)"
    )
