"""``[server] processes = 2``: real serving processes on one port under the supervisor, real
HTTP on 127.0.0.1, real ONNX Runtime; metrics add up, hot swaps drop nothing, a dead process
is replaced and SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from support.agent import AgentProcess, start_agent
from support.models import make_linear_bundle

pytestmark = pytest.mark.slow

_CLI = [sys.executable, "-c", "from edgeserve.cli import main; main()"]
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
SUCCESS = 'edgeserve_inference_request_success_total{model="linear",version="1"}'


def _children(pid: int) -> list[int]:
    """The supervisor's child processes (Linux /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _wait_children(agent: AgentProcess, n: int, timeout_s: float = 30.0) -> list[int]:
    """The serving processes, once the supervisor printed its ready line (every process
    serves; ``/v2/health/ready`` answers as soon as the first one does)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if f" processes {n} models [" in agent.log():
            kids = _children(agent.process.pid)
            assert len(kids) == n, kids
            return kids
        time.sleep(0.05)
    raise AssertionError(f"supervisor not ready with {n} processes:\n{agent.log()}")


def _fresh(url: str, path: str, **kw: object) -> httpx.Response:
    """One request on a new connection (the kernel picks a process per connection)."""
    with httpx.Client(timeout=10) as http:
        if kw:
            return http.post(url + path, **kw)  # type: ignore[arg-type]
        return http.get(url + path)


def _per_process_success(metrics_dir: Path) -> dict[int, float]:
    """Successful requests counted by each process, read from its own multiprocess file."""
    out: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if "edgeserve_inference_request_success" in key:
                out[pid] = out.get(pid, 0.0) + value
    return out


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_agent_processes_metrics_add_up_across_processes(tmp_path: Path, state_dir: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with start_agent(state_dir, extra_args=["--processes", "2"], env=env) as agent:
        kids = _wait_children(agent, 2)
        n = 0
        # new connections until both processes have served (the kernel hashes each one)
        while n < 300 or len([v for v in _per_process_success(metrics_dir).values() if v]) < 2:
            assert n < 3000, _per_process_success(metrics_dir)
            assert _fresh(agent.url, "/v2/models/linear/infer", json=BODY).status_code == 200
            n += 1
        per_process = _per_process_success(metrics_dir)
        assert set(per_process) == set(kids)
        assert all(v > 0 for v in per_process.values()), per_process
        # whichever process answers /metrics reports the sum over both
        for _ in range(10):
            text = _fresh(agent.url, "/metrics").text
            assert _metric(text, SUCCESS) == n
            assert _metric(text, 'edgeserve_model_ready{model="linear",version="1"}') == 1
            assert "process_resident_memory_bytes" not in text


def test_agent_processes_all_serve_grpc(tmp_path: Path, state_dir: Path) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from support.agent import linear_reference
    from support.broker import free_port

    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    args = ["--processes", "2", "--grpc-port", str(port)]
    with start_agent(state_dir, extra_args=args, env=env) as agent:
        kids = _wait_children(agent, 2)
        x = np.ones((1, 4), np.float32)
        n = 0
        # a new channel (connection) per call until both processes have answered gRPC
        while n < 20 or len([v for v in _per_process_success(metrics_dir).values() if v]) < 2:
            assert n < 1000, _per_process_success(metrics_dir)
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
            try:
                inp = grpcclient.InferInput("x", [1, 4], "FP32")
                inp.set_data_from_numpy(x)
                y = client.infer("linear", [inp]).as_numpy("y")
            finally:
                client.close()
            np.testing.assert_allclose(y, linear_reference(x), rtol=1e-5)
            n += 1
        assert set(_per_process_success(metrics_dir)) == set(kids)
        # a single agent started on the port finds it taken, as it would HTTP's
        other = ["--state", str(tmp_path / "other"), "--port", "0", "--grpc-port", str(port)]
        taken = subprocess.run(
            [*_CLI, "agent", "run", *other],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert taken.returncode == 2 and "cannot listen for gRPC" in taken.stderr, taken.stderr


def test_agent_processes_hotswap_drops_no_request(tmp_path: Path, state_dir: Path) -> None:
    b2 = make_linear_bundle(tmp_path / "b2", version=2, seed=1).path
    b3 = make_linear_bundle(tmp_path / "b3", version=3, seed=2).path
    config = {"poll_interval_s": 0.1, "server": {"processes": 2}}
    with start_agent(state_dir, config=config) as agent:
        _wait_children(agent, 2)
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
                done = await loop.run_in_executor(
                    None,
                    lambda a=args: subprocess.run(
                        [*_CLI, *a], capture_output=True, text=True, timeout=60
                    ),
                )
                assert done.returncode == 0, done.stderr
                await asyncio.sleep(0.6)  # both processes poll the store and swap under load
            stop.set()

        async def main() -> None:
            # no keep-alive: every request a new connection, spread over both processes
            limits = httpx.Limits(max_connections=8, max_keepalive_connections=0)
            async with httpx.AsyncClient(timeout=30, limits=limits) as http:
                await asyncio.gather(swaps(), *(client(http) for _ in range(8)))

        asyncio.run(main())
        assert set(statuses) == {200}, statuses
        assert {"1", "2", "3"} <= set(versions), versions
        # every process serves v3 now
        for _ in range(20):
            resp = _fresh(agent.url, "/v2/models/linear/infer", json=BODY)
            assert resp.json()["model_version"] == "3"


def test_agent_processes_dead_process_is_restarted_and_sigterm_stops_all(
    state_dir: Path,
) -> None:
    agent = start_agent(state_dir, extra_args=["--processes", "2"])
    try:
        first = _wait_children(agent, 2)
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kids = _children(agent.process.pid)
            if len(kids) == 2 and first[0] not in kids:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"not restarted: {_children(agent.process.pid)}")
        assert first[1] in kids
        # the replacement joins the port once ready; requests keep being answered meanwhile
        for _ in range(50):
            assert _fresh(agent.url, "/v2/models/linear/infer", json=BODY).status_code == 200
        assert "serving process 0 exited with code -9; restarting" in agent.log()
    finally:
        code = agent.stop(timeout=30)
    assert code == 0, agent.log()
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists(), f"serving process {pid} outlived the supervisor"


def test_agent_processes_die_with_a_killed_supervisor(state_dir: Path) -> None:
    agent = start_agent(state_dir, extra_args=["--processes", "2"])
    try:
        kids = _wait_children(agent, 2)
        agent.process.kill()  # SIGKILL: the supervisor cannot stop its children itself
        agent.process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() for pid in kids):
            assert time.monotonic() < deadline, f"serving processes {kids} outlived the supervisor"
            for pid in kids:  # reap them if they were ours (they are the supervisor's)
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        with pytest.raises(httpx.TransportError):
            _fresh(agent.url, "/v2/health/live")
    finally:
        agent.stop(timeout=10)


def test_agent_processes_port_in_use_is_one_line(state_dir: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["agent", "run", "--state", str(state_dir), "--port", str(port), "--processes", "2"]
        done = subprocess.run(
            [*_CLI, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_agent_processes_zero_is_a_config_error(tmp_path: Path) -> None:
    from edgeserve.agent.config import load_config

    from edgeserve.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[server\] processes: must be at least 1"):
        load_config(None, {"server.processes": 0, "state_dir": str(tmp_path)})


def test_agent_processes_share_one_telemetry_buffer_without_early_drops(tmp_path: Path) -> None:
    from edgeserve.agent.serving.telemetry import TelemetryBuffer

    path = tmp_path / "telemetry.jsonl"
    syncing, other = TelemetryBuffer(path, 2000), TelemetryBuffer(path, 2000)
    try:
        for i in range(200):  # far more than the bound in total, acked as it goes
            other.append({"i": i, "pad": "x" * 50})
            pending = syncing.pending(100)
            if len(pending) > 5:  # delivery lags: the newest 5 records wait to be sent
                syncing.ack(pending[-6][0])
        assert syncing.dropped == 0
        assert len(syncing) == 5
    finally:
        syncing.close()
        other.close()
