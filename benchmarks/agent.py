"""Agent benchmark: latency, throughput, memory and cold start of ``edgeserve agent run``.

Prints, in one run, on the same small CNN (MNIST-shaped, made here with onnx):

- p50/p99 at batch 1: raw in-process runtime call vs HTTP JSON vs HTTP binary (wrk, c=1);
- gRPC (``--grpc-port``) at batch 1 against HTTP binary, alternated over rounds (median p50
  and the spread), and the gRPC floor: an RPC that does no model work (``ServerLive``); first
  from one native client for both protocols (h2load, ``benchmarks/native_latency.py``), then
  from Python clients in this process (which cost more per call than the servers);
- throughput and p99 at concurrency 1, 8, 32 with batching off and on: HTTP JSON (wrk) and
  gRPC (``benchmarks/grpc_load.py``, a multi-process Python load generator whose ceiling is
  printed beside it);
- idle RSS of the agent process after warm-up, without and with gRPC on;
- idle RSS with and without fleet sync (a Mosquitto broker and an artifact server on loopback;
  with fleet sync on, a second model arrives as a signed release through it), alternated;
  without it also after the first telemetry window, once the telemetry buffer (SQLite) is open;
- cold start: process spawn to ``/v2/health/ready`` = 200 (median of 5).

The project's sources are compiled to bytecode first, as ``pip install`` does
(:func:`compile_sources`).

With ``--grpc-only`` it prints only the gRPC vs HTTP binary comparison at batch 1 and the idle
RSS without and with gRPC on (about a minute). With ``--processes 1,2`` it prints instead, for
each process count (alternated over ``--rounds``): req/s and p99 at 32 connections (HTTP JSON,
batching on), how busy the machine's cores were (``/proc/stat``) and how much of them the
agent's processes used (their ``/proc/<pid>/stat`` CPU time), and the RSS of each serving
process and of the supervisor.

Usage::

    .venv/bin/python benchmarks/agent.py [--seconds 5] [--model cnn|mlp] [--rounds 3] [--rss-only]
    .venv/bin/python benchmarks/agent.py --grpc-only [--seconds 3] [--rounds 5]
    .venv/bin/python benchmarks/agent.py --processes 1,2 [--seconds 5] [--rounds 3]

Needs ``wrk`` and ``h2load`` (Debian packages wrk and nghttp2-client; not with ``--rss-only``),
Mosquitto (``scripts/test`` installs it), the ``convert`` extra (onnx) to build the model and
the ``grpc`` extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from grpc_load import grpc_latency, grpc_load  # noqa: E402
from native_latency import (  # noqa: E402
    H2LOAD_MISSING,
    alternate,
    grpc_targets,
    http_target,
    print_rounds,
)

INFER = "/inference.GRPCInferenceService/ModelInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"

_CLI = [sys.executable, "-c", "from edgeserve.cli import main; main()"]


def make_cnn(path: Path) -> tuple[tuple[int, ...], int]:
    """A small CNN: conv8-relu-pool-conv16-relu-pool-fc10-softmax on 1x28x28."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    inits = [
        w("c1w", 8, 1, 3, 3),
        w("c1b", 8),
        w("c2w", 16, 8, 3, 3),
        w("c2b", 16),
        w("fw", 16 * 7 * 7, 10),
        w("fb", 10),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return (-1, 1, 28, 28), 10


def make_mlp(path: Path) -> tuple[tuple[int, ...], int]:
    """An MLP 256-1024-1024-10: batch 1 is a matrix-vector product, batching pays."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [256, 1024, 1024, 10]
    nodes, inits, prev = [], [], "x"
    for i in range(3):
        inits.append(
            numpy_helper.from_array(
                (rng.standard_normal((dims[i], dims[i + 1])) * 0.03).astype(np.float32), f"w{i}"
            )
        )
        inits.append(numpy_helper.from_array(np.zeros(dims[i + 1], np.float32), f"b{i}"))
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
        prev = f"g{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["y"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return (-1, 256), 10


def build_bundle(work: Path, kind: str) -> Path:
    from edgeserve.bundle import write_bundle
    from edgeserve.bundle.manifest import Manifest, TensorSpec

    onnx_path = work / f"{kind}.onnx"
    shape, classes = (make_cnn if kind == "cnn" else make_mlp)(onnx_path)
    manifest = Manifest(
        name=kind,
        version=1,
        format="onnx",
        precision="fp32",
        target="onnx-cpu-fp32",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("x", "FP32", shape),),
        outputs=(TensorSpec("y", "FP32", (-1, classes)),),
    )
    return write_bundle(
        work / f"{kind}-bundle", manifest, {"model.onnx": (onnx_path, "model")}
    ).path


def compile_sources() -> None:
    """Compile the project's packages to bytecode, as ``pip install`` does for a device.

    A source checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (or from a read-only tree) has no
    ``__pycache__``, so every agent start would compile each of its modules again: about 40 ms
    of cold start and 0.6 MB of RSS (4 alternated starts, 2026-12-02) that no installed agent
    pays. Writes ``__pycache__`` beside the sources (ignored by git).
    """
    import compileall

    for package in ("edgeserve", "agent"):
        compileall.compile_dir(ROOT / package, quiet=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30) -> float:
    """Poll readiness with a raw socket (cheap, so it does not slow the start it measures)."""
    request = b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n"
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("agent did not become ready")


def start(state: Path, *args: str) -> tuple[subprocess.Popen, int, float]:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*_CLI, "agent", "run", "--state", str(state), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ready = wait_ready(port, proc)
    return proc, port, ready - t0


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MB (``RssAnon``: its private memory only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class HttpClient:
    """A minimal keep-alive HTTP/1.1 client on a raw socket: the least client-side work for a
    like-for-like latency comparison with the gRPC client (both Python, both in this process)."""

    def __init__(self, port: int, request: bytes) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._request = request

    def call(self) -> None:
        self._sock.sendall(self._request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self._sock.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        while len(rest) < length:
            rest += self._sock.recv(65536)

    def latency(self, seconds: float) -> dict[str, float]:
        for _ in range(200):
            self.call()
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            self.call()
            times.append((time.perf_counter() - t0) * 1000)
        return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}

    def close(self) -> None:
        self._sock.close()


def grpc_payload(model: str, x: np.ndarray) -> bytes:
    """A serialized ModelInferRequest with ``x`` in raw_input_contents."""
    from edgeserve.agent.grpc import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


def binary_header(x: np.ndarray) -> bytes:
    """The JSON header of an OIP v2 binary request with ``x`` as input ``x`` and ``y`` asked
    for as binary (the tensor bytes follow it; ``Inference-Header-Content-Length`` is its size)."""
    import json

    return json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()


def _lua(body_path: Path, headers: dict[str, str], path: Path) -> Path:
    lines = [
        'wrk.method = "POST"',
        f'local f = io.open("{body_path}", "rb")',
        'wrk.body = f:read("*all")',
        "f:close()",
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ms(value: str) -> float:
    match = re.match(r"([0-9.]+)(us|ms|s)", value)
    if not match:
        return float("nan")
    number, unit = float(match.group(1)), match.group(2)
    return number / 1000 if unit == "us" else number * 1000 if unit == "s" else number


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    threads = 1 if connections < 8 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))}
    for pct in ("50", "99"):
        result[f"p{pct}"] = _ms(re.search(rf"\s{pct}%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat (busy = all but idle and iowait)."""
    cols = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(cols[:8])  # guest time is already counted in user
    return total - cols[3] - cols[4], total


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def processes_comparison(
    state: Path, url: str, script: Path, counts: list[int], seconds: float, rounds: int
) -> None:
    """Throughput, CPU use and RSS per process at c=32 for each process count, alternated."""
    results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    rss: dict[int, list[float]] = {}
    for _ in range(rounds):
        for n in counts:
            proc, port, _ = start(state, "--batching", "--processes", str(n))
            try:
                pids = (_children(proc.pid) if n > 1 else []) or [proc.pid]
                base = f"http://127.0.0.1:{port}"
                wrk(base + url, script, 32, 1)  # warm every process's connections
                everyone = [proc.pid, *pids] if n > 1 else pids
                cpu0 = sum(_cpu_s(p) for p in everyone)
                busy0, total0 = _machine_busy()
                t0 = time.perf_counter()
                r = wrk(base + url, script, 32, seconds)
                wall = time.perf_counter() - t0
                busy1, total1 = _machine_busy()
                cpu1 = sum(_cpu_s(p) for p in everyone)
                r["busy"] = (busy1 - busy0) / (total1 - total0) * 100
                r["agent_cpu"] = (cpu1 - cpu0) / (wall * (os.cpu_count() or 1)) * 100
                results[n].append(r)
                rss[n] = [rss_mb(p) for p in pids] + ([rss_mb(proc.pid)] if n > 1 else [])
            finally:
                stop(proc)
    base_rps = statistics.median(r["rps"] for r in results[counts[0]])
    print(
        f"\nprocesses at c=32 (HTTP JSON, batching on, wrk -t2), {rounds} alternated rounds: "
        "median (min-max)"
    )
    print("  processes   req/s                  vs first   p99 ms   cores busy   agent CPU")
    for n in counts:
        rps = [r["rps"] for r in results[n]]
        med = statistics.median(rps)
        print(
            f"  {n:>9}   {med:>6.0f} ({min(rps):.0f}-{max(rps):.0f})"
            f"{'':>{max(0, 13 - len(f'{min(rps):.0f}-{max(rps):.0f}'))}}"
            f"{med / base_rps:>6.2f}x  {statistics.median(r['p99'] for r in results[n]):7.2f}"
            f"   {statistics.median(r['busy'] for r in results[n]):9.0f} %"
            f"   {statistics.median(r['agent_cpu'] for r in results[n]):8.0f} %"
        )
    print(
        "  RSS after the load (MB): "
        + "; ".join(
            f"{n} process{'es' if n > 1 else ''}: "
            + (
                ", ".join(f"{v:.1f}" for v in rss[n][:-1]) + f" + supervisor {rss[n][-1]:.1f}"
                if n > 1
                else f"{rss[n][0]:.1f}"
            )
            for n in counts
        )
    )
    errors = sum(r["errors"] for rs in results.values() for r in rs)
    print(f"  non-2xx responses: {errors:.0f}")


def raw_latency(bundle: Path, shape: tuple[int, ...], n: int = 3000) -> tuple[float, float]:
    from edgeserve.bundle import read_bundle
    from edgeserve.runtimes import RuntimeOptions, load_runtime

    runtime = load_runtime(read_bundle(bundle), RuntimeOptions(threads=1))
    x = {"x": np.random.default_rng(0).standard_normal((1, *shape[1:])).astype(np.float32)}
    for _ in range(200):
        runtime.run(x)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        runtime.run(x)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _agent_rss(
    config: dict, requests: list[tuple[str, bytes]], wait_for=None, buffer_open: bool = False
) -> float:
    """Start ``agent run --config``, let ``wait_for`` run, warm up, idle, return VmRSS MB.

    With ``buffer_open`` the telemetry buffer must have been opened by then (its file exists:
    the agent opens it on first use, for a window that counted requests or for fleet sync's
    upload), so the figure includes SQLite.
    """
    from support.agent import write_toml

    port = free_port()
    config = {**config, "server": {"port": port}}
    path = write_toml(Path(config["state_dir"]).parent / f"agent-{port}.toml", config)
    proc = subprocess.Popen(
        [*_CLI, "agent", "run", "--config", str(path)],
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

    The agent opens its telemetry buffer (SQLite) on first use, so without fleet sync it is
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per point")
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--rounds", type=int, default=3, help="alternated HTTP/gRPC latency rounds")
    parser.add_argument(
        "--threads", type=int, default=None, help="runtime threads per model (default: agent's)"
    )
    parser.add_argument(
        "--rss-only", action="store_true", help="only idle RSS with and without fleet sync"
    )
    parser.add_argument(
        "--grpc-only",
        action="store_true",
        help="only gRPC vs HTTP binary at batch 1 and idle RSS with and without gRPC",
    )
    parser.add_argument(
        "--processes",
        default="",
        help="compare serving process counts at c=32 only, e.g. 1,2 (see the docstring)",
    )
    opts = parser.parse_args()
    if shutil.which("wrk") is None and not opts.rss_only:
        sys.exit("wrk is not installed (apt-get install wrk)")
    if shutil.which("h2load") is None and not opts.rss_only and not opts.processes:
        sys.exit(H2LOAD_MISSING)
    from edgeserve.agent.store import ModelStore

    compile_sources()
    work = Path(tempfile.mkdtemp(prefix="edgeserve-bench-"))
    try:
        bundle = build_bundle(work, opts.model)
        state = work / "state"
        ModelStore(state).install(bundle)
        shape = (1, 1, 28, 28) if opts.model == "cnn" else (1, 256)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        import json

        json_body = work / "body.json"
        json_body.write_text(
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": list(shape),
                            "datatype": "FP32",
                            "data": x.ravel().tolist(),
                        }
                    ]
                }
            )
        )
        header = binary_header(x)
        bin_body = work / "body.bin"
        bin_body.write_bytes(header + x.tobytes())
        bin_request = (
            (
                f"POST /v2/models/{opts.model}/infer HTTP/1.1\r\nhost: bench\r\n"
                "content-type: application/octet-stream\r\n"
                f"inference-header-content-length: {len(header)}\r\n"
                f"content-length: {len(header) + x.nbytes}\r\n\r\n"
            ).encode()
            + header
            + x.tobytes()
        )
        payload = grpc_payload(opts.model, x)
        json_lua = _lua(json_body, {"Content-Type": "application/json"}, work / "json.lua")
        bin_lua = _lua(
            bin_body,
            {
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
            work / "bin.lua",
        )
        url = f"/v2/models/{opts.model}/infer"
        if opts.processes:
            counts = [int(n) for n in opts.processes.split(",")]
            print(
                f"edgeserve agent benchmark — model {opts.model}, {platform.machine()}, "
                f"{os.cpu_count()} cores, Python {platform.python_version()}, wrk "
                f"{opts.seconds:g} s per point"
            )
            processes_comparison(state, url, json_lua, counts, opts.seconds, opts.rounds)
            return
        threads = ["--threads", str(opts.threads)] if opts.threads is not None else []

        print(
            f"edgeserve agent benchmark — model {opts.model}, {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, wrk {opts.seconds:g} s "
            "per point"
        )
        if opts.rss_only:
            print_fleet_rss(work, bundle, opts.model, shape)
            return
        print("\nlatency at batch 1          p50 ms    p99 ms")
        if not opts.grpc_only:
            p50, p99 = raw_latency(bundle, shape)
            print(f"  raw runtime.run (in-proc) {p50:8.3f}  {p99:8.3f}")
        colds = []
        for _ in range(0 if opts.grpc_only else 5):
            proc, port, cold = start(state, "--no-batching", *threads)
            colds.append(cold)
            stop(proc)
        proc, port, _ = start(state, "--no-batching", *threads)
        try:
            time.sleep(0.5)
            at_ready = rss_mb(proc.pid)
            base = f"http://127.0.0.1:{port}"
            for name, script in (("HTTP JSON", json_lua), ("HTTP binary", bin_lua)):
                wrk(base + url, script, 1, 1)  # warm
                r = wrk(base + url, script, 1, opts.seconds)
                print(f"  {name:<25} {r['p50']:8.3f}  {r['p99']:8.3f}")
            time.sleep(1.0)
            idle = rss_mb(proc.pid)
            anon = rss_mb(proc.pid, "RssAnon")
            if not opts.grpc_only:
                off = {c: wrk(base + url, json_lua, c, opts.seconds) for c in (1, 8, 32)}
        finally:
            stop(proc)
        # gRPC on: the same no-batching agent with --grpc-port, HTTP binary and gRPC from
        # Python clients in this process, alternated
        gport = free_port()
        proc, port, _ = start(state, "--no-batching", "--grpc-port", str(gport), *threads)
        try:
            time.sleep(0.5)
            base = f"http://127.0.0.1:{port}"
            for script in (json_lua, bin_lua):  # the same traffic as the agent without gRPC
                wrk(base + url, script, 1, 1)
                wrk(base + url, script, 1, opts.seconds)
            time.sleep(1.0)
            idle_grpc_http_only = rss_mb(proc.pid)
            target = f"127.0.0.1:{gport}"
            http = HttpClient(port, bin_request)
            rounds: dict[str, list[dict[str, float]]] = {"http": [], "grpc": [], "live": []}
            native_targets = [
                http_target(work, port, opts.model, header, x.tobytes()),
                *grpc_targets(work, gport, opts.model, payload),
            ]
            native: dict[str, list[dict[str, float]]] = {t.name: [] for t in native_targets}
            try:
                for _ in range(opts.rounds):
                    for name, runs in alternate(native_targets, 1, opts.seconds / 2, work).items():
                        native[name] += runs
                    rounds["http"].append(http.latency(opts.seconds / 2))
                    rounds["grpc"].append(grpc_latency(target, INFER, payload, opts.seconds / 2))
                    rounds["live"].append(grpc_latency(target, LIVE, b"", opts.seconds / 2))
            finally:
                http.close()
            time.sleep(1.0)
            idle_grpc = rss_mb(proc.pid)
            anon_grpc = rss_mb(proc.pid, "RssAnon")
            if not opts.grpc_only:
                grpc_off = {
                    c: grpc_load(target, INFER, payload, c, opts.seconds) for c in (1, 8, 32)
                }
                ceiling = grpc_load(target, LIVE, b"", 32, opts.seconds)
        finally:
            stop(proc)
        print_rounds(
            "\ngRPC vs HTTP binary at batch 1, h2load (one native client for both, c=1), "
            f"{opts.rounds} alternated rounds: median p50 (min-max) / median p99 ms",
            native,
        )
        print(
            "gRPC vs HTTP binary at batch 1, Python clients (the same rounds): "
            "median p50 (min-max) / median p99 ms"
        )
        for key, name in (
            ("http", "HTTP binary"),
            ("grpc", "gRPC ModelInfer"),
            ("live", "gRPC ServerLive (no model)"),
        ):
            p50s = [r["p50"] for r in rounds[key]]
            p99s = [r["p99"] for r in rounds[key]]
            print(
                f"  {name:<27} {statistics.median(p50s):6.3f} ({min(p50s):.3f}-{max(p50s):.3f})"
                f"   {statistics.median(p99s):6.3f}"
            )
        grpc_rss = (
            f"  with gRPC on:            {idle_grpc_http_only:.1f} MB after the same warm-up "
            f"(+{idle_grpc_http_only - idle:.1f} MB); {idle_grpc:.1f} MB after gRPC traffic "
            f"(+{idle_grpc - idle:.1f} MB; private {anon_grpc:.1f} MB vs {anon:.1f} MB without, "
            f"+{anon_grpc - anon:.1f} MB)"
        )
        if opts.grpc_only:
            print(f"\nidle RSS after warm-up:    {idle:.1f} MB  (at ready: {at_ready:.1f} MB)")
            print(grpc_rss)
            return

        proc, port, _ = start(state, "--batching", "--grpc-port", str(gport), *threads)
        try:
            base = f"http://127.0.0.1:{port}"
            wrk(base + url, json_lua, 8, 1)
            on = {c: wrk(base + url, json_lua, c, opts.seconds) for c in (1, 8, 32)}
            loaded_rss = rss_mb(proc.pid)
            target = f"127.0.0.1:{gport}"
            grpc_on = {c: grpc_load(target, INFER, payload, c, opts.seconds) for c in (1, 8, 32)}
        finally:
            stop(proc)
        for title, table_off, table_on in (
            ("HTTP JSON (wrk)", off, on),
            ("gRPC (Python load generator)", grpc_off, grpc_on),
        ):
            print(f"\nthroughput ({title}, batch-1 requests)")
            print("  concurrency   batching off: req/s   p99 ms  |  batching on: req/s   p99 ms")
            for c in (1, 8, 32):
                print(
                    f"  {c:>11}   {table_off[c]['rps']:>19.0f} {table_off[c]['p99']:8.2f}  |"
                    f" {table_on[c]['rps']:>18.0f} {table_on[c]['p99']:8.2f}"
                )
            errs = sum(r["errors"] for r in (*table_off.values(), *table_on.values()))
            print(
                f"  speed-up at c=32 with batching: "
                f"{table_on[32]['rps'] / table_off[32]['rps']:.2f}x   (errors: {errs:.0f})"
            )
        print(f"  load generator ceiling (ServerLive, no model, c=32): {ceiling['rps']:.0f} req/s")
        print(
            f"\nidle RSS after warm-up:    {idle:.1f} MB  (at ready, before any request: "
            f"{at_ready:.1f} MB; after the batching load: {loaded_rss:.1f} MB)"
        )
        print(grpc_rss)
        print(
            f"cold start to ready:       {statistics.median(colds) * 1000:.0f} ms median of 5 "
            f"(min {min(colds) * 1000:.0f}, max {max(colds) * 1000:.0f})"
        )
        print_fleet_rss(work, bundle, opts.model, shape)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
