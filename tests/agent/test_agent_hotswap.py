"""Hot swap under load drops nothing; a kill -9 mid-install leaves the old version serving."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from edgeserve.agent.store import ModelStore
from support.agent import start_agent
from support.models import make_linear_bundle

from edgeserve.bundle import write_bundle

_CLI = [sys.executable, "-c", "from edgeserve.cli import main; main()"]
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_CLI, *args], capture_output=True, text=True, timeout=60)


def test_agent_hotswap_under_load_drops_no_request(tmp_path: Path, state_dir: Path) -> None:
    b2 = make_linear_bundle(tmp_path / "b2", version=2, seed=1).path
    b3 = make_linear_bundle(tmp_path / "b3", version=3, seed=2).path
    with start_agent(state_dir, config={"poll_interval_s": 0.1}) as agent:
        statuses: Counter = Counter()
        versions: Counter = Counter()
        stop = asyncio.Event()

        async def client(http: httpx.AsyncClient) -> None:
            for _ in range(100_000):  # bounded; stops when the swaps are done
                if stop.is_set():
                    return
                resp = await http.post(f"{agent.url}/v2/models/linear/infer", json=BODY)
                statuses[resp.status_code] += 1
                if resp.status_code == 200:
                    versions[resp.json()["model_version"]] += 1

        async def swaps() -> None:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(0.3)
            for args in (
                ("agent", "install", str(b2), "--state", str(state_dir)),
                ("agent", "activate", "linear", "1", "--state", str(state_dir)),
                ("agent", "install", str(b3), "--state", str(state_dir)),
            ):
                done = await loop.run_in_executor(None, _cli, *args)
                assert done.returncode == 0, done.stderr
                await asyncio.sleep(0.6)  # poll picks it up, swap happens under load
            stop.set()

        async def main() -> None:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=8)) as h:
                await asyncio.gather(swaps(), *(client(h) for _ in range(8)))

        asyncio.run(main())
        assert set(statuses) == {200}, statuses
        assert {"1", "2", "3"} <= set(versions), versions
        final = httpx.post(f"{agent.url}/v2/models/linear/infer", json=BODY).json()
        assert final["model_version"] == "3"
        # the old versions were unloaded
        index = httpx.post(f"{agent.url}/v2/repository/index").json()
        assert {r["version"]: r["state"] for r in index} == {
            "1": "UNAVAILABLE",
            "2": "UNAVAILABLE",
            "3": "READY",
        }


def test_agent_kill9_during_install_then_restart_serves_old_version(
    tmp_path: Path, state_dir: Path
) -> None:
    big = make_linear_bundle(tmp_path / "src2", version=2, seed=1)
    pad = tmp_path / "pad.bin"
    pad.write_bytes(os.urandom(48 * 1024 * 1024))  # makes the copy take long enough to hit
    bundle = write_bundle(
        tmp_path / "b2",
        big.manifest,
        {"model.onnx": (big.model_path, "model"), "pad.bin": (pad, "other")},
    )
    store = ModelStore(state_dir)
    killed_mid_copy = 0
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        proc = subprocess.Popen(
            [*_CLI, "agent", "install", str(bundle.path), "--state", str(state_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.name.startswith(".install-") for p in (store.root / "linear").iterdir()):
                time.sleep(delay)
                break
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_copy += 1
        proc.wait(10)
        if 2 in store.versions("linear"):
            # the install won the race: it is complete and checked, never half there
            store.activate("linear", 1)
            store.remove("linear", 2)
            continue
        assert store.versions("linear") == [1]
        assert store.active_version("linear") == 1
    assert killed_mid_copy >= 1
    leftovers = [p for p in (store.root / "linear").iterdir() if p.name.startswith(".install-")]
    with start_agent(state_dir) as agent:
        resp = httpx.post(f"{agent.url}/v2/models/linear/infer", json=BODY)
        assert resp.status_code == 200 and resp.json()["model_version"] == "1"
        assert not any(p.exists() for p in leftovers)  # cleaned on start
    # and the interrupted version installs fine afterwards
    assert _cli("agent", "install", str(bundle.path), "--state", str(state_dir)).returncode == 0
    assert store.active_version("linear") == 2


def test_agent_kill9_of_the_agent_then_restart_serves(state_dir: Path) -> None:
    agent = start_agent(state_dir)
    agent.kill()
    with start_agent(state_dir) as again:
        resp = httpx.post(f"{again.url}/v2/models/linear/infer", json=BODY)
        assert resp.status_code == 200
        np.testing.assert_equal(resp.json()["outputs"][0]["shape"], [1, 3])
