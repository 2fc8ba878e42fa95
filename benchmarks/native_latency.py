"""gRPC vs HTTP binary latency at batch 1 from one native client: h2load (nghttp2-client).

A Python client costs more per call than the servers it measures (grpcio's client most of all),
so the primary comparison uses one C client for both protocols, Debian's ``h2load``, at
concurrency 1 on one connection:

- HTTP binary: HTTP/1.1 (``--h1``), the OIP v2 binary extension (JSON header, raw tensor bytes,
  ``Inference-Header-Content-Length``);
- gRPC ``ModelInfer``: HTTP/2 (h2c), the 5-byte gRPC frame prefix and the serialized
  ``ModelInferRequest`` as the body, ``content-type: application/grpc`` and ``te: trailers``;
- gRPC ``ServerLive`` (no model work): what the gRPC server itself costs per call.

h2load does not read gRPC trailers, so an error (HTTP 200 with a non-zero ``grpc-status`` and
no message) would count as a fast success: every run therefore checks that each answer carried
exactly the DATA bytes of a correct answer, which was itself decoded and checked once with a
Python client (:func:`check_grpc_answer`, :func:`check_http_answer`). Per-request durations
come from h2load's ``--log-file``.

Run alone it compares agent builds, alternated over rounds (before/after a change)::

    .venv/bin/python benchmarks/native_latency.py [--pythonpath DIR ...] [--rounds 5] [--seconds 3]

``--pythonpath DIR`` adds an agent importing edgeserve from ``DIR`` (``pip install --no-deps
--target DIR <checkout>``) beside this checkout's. ``benchmarks/agent.py`` imports it for its
primary batch-1 comparison.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = [
    "H2LOAD_MISSING",
    "Target",
    "alternate",
    "check_grpc_answer",
    "check_http_answer",
    "grpc_frame",
    "grpc_targets",
    "h2load",
    "http_target",
    "print_rounds",
]

H2LOAD_MISSING = "h2load is not installed (apt-get install nghttp2-client)"
SERVICE = "/inference.GRPCInferenceService/"


@dataclass(frozen=True)
class Target:
    """One request that h2load repeats, and the DATA bytes each correct answer has."""

    name: str
    url: str
    body: Path
    headers: tuple[str, ...]
    h1: bool
    answer_bytes: int


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, message."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def check_grpc_answer(target: str, method: str, message: bytes, model: str | None) -> int:
    """Call ``method`` once with grpcio, check the answer (status OK; for ``ModelInfer`` the
    model's name and a finite FP32 output), and return its framed size in bytes.

    Raises:
        RuntimeError: the answer is not a correct one.
    """
    import grpc

    with grpc.insecure_channel(target) as channel:
        answer = channel.unary_unary(SERVICE + method)(message, timeout=30)
    if model is not None:
        from edgeserve.agent.grpc import inference_pb2 as pb

        response = pb.ModelInferResponse.FromString(answer)
        out = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
        if response.model_name != model or not out.size or not np.isfinite(out).all():
            raise RuntimeError(f"gRPC {method}: unexpected answer {response}")
    return len(grpc_frame(answer))


def check_http_answer(port: int, url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST once, check a 200 with a binary output, and return the answer's body size."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", url, body, headers)
        resp = conn.getresponse()
        answer = resp.read()
        if resp.status != 200 or not resp.getheader("inference-header-content-length"):
            raise RuntimeError(f"HTTP {url}: {resp.status} {answer[:200]!r}")
    finally:
        conn.close()
    return len(answer)


def http_target(work: Path, port: int, model: str, header: bytes, raw: bytes) -> Target:
    """The HTTP binary request (``header``: the JSON header), checked once."""
    body = work / "h2load-http.bin"
    body.write_bytes(header + raw)
    url = f"/v2/models/{model}/infer"
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    size = check_http_answer(port, url, header + raw, headers)
    return Target(
        "HTTP binary",
        f"http://127.0.0.1:{port}{url}",
        body,
        tuple(f"{k}: {v}" for k, v in headers.items()),
        True,
        size,
    )


def grpc_targets(work: Path, port: int, model: str, message: bytes) -> list[Target]:
    """``ModelInfer`` with ``message`` and ``ServerLive``, each checked once."""
    targets = []
    for name, method, body in (
        ("gRPC ModelInfer", "ModelInfer", message),
        ("gRPC ServerLive (no model)", "ServerLive", b""),
    ):
        path = work / f"h2load-{method}.bin"
        path.write_bytes(grpc_frame(body))
        size = check_grpc_answer(
            f"127.0.0.1:{port}", method, body, model if method == "ModelInfer" else None
        )
        targets.append(
            Target(
                name,
                f"http://127.0.0.1:{port}{SERVICE}{method}",
                path,
                ("content-type: application/grpc", "te: trailers"),
                False,
                size,
            )
        )
    return targets


def _count(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"h2load output without {pattern!r}:\n{text}")
    return int(match.group(1))


def h2load(target: Target, seconds: float, log: Path, warm_up: int = 300) -> dict[str, float]:
    """Back-to-back requests on one connection for ``seconds`` (after ``warm_up`` requests in a
    run of their own): p50/p99 ms from the log file, req/s, requests.

    Raises:
        RuntimeError: a request failed or an answer was not the size of a correct one.
    """
    base = ["h2load", "-c1", "-t1", "-d", str(target.body)]
    base += [arg for header in target.headers for arg in ("-H", header)]
    base += ["--h1"] if target.h1 else []
    subprocess.run(
        [*base, "-n", str(warm_up), target.url], capture_output=True, text=True, check=True
    )
    log.unlink(missing_ok=True)  # h2load appends to it
    out = subprocess.run(
        [*base, "-D", f"{round(seconds * 1000)}ms", "--log-file", str(log), target.url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done = _count(r"(\d+) done", out)
    started = _count(r"(\d+) started", out)
    ok = _count(r"(\d+) succeeded", out)
    data = _count(r"\((\d+)\) data", out)
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    bad = sum(1 for row in rows if row[1] != "200")
    # a gRPC error answers 200 and trailers only, no message: short on DATA bytes
    if ok != done or bad or not done * target.answer_bytes <= data <= started * target.answer_bytes:
        raise RuntimeError(
            f"{target.name}: {done} done, {ok} succeeded, {bad} not 200, {data} DATA bytes "
            f"for {target.answer_bytes} per correct answer:\n{out}"
        )
    ms = np.asarray([int(row[2]) for row in rows], dtype=np.float64) / 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "rps": done / seconds,
        "n": float(done),
    }


def alternate(
    targets: list[Target], rounds: int, seconds: float, work: Path
) -> dict[str, list[dict[str, float]]]:
    """Every target once per round, in turn, ``rounds`` times."""
    results: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
    for _ in range(rounds):
        for target in targets:
            results[target.name].append(h2load(target, seconds, work / "h2load.log"))
    return results


def print_rounds(title: str, results: dict[str, list[dict[str, float]]]) -> None:
    """Median p50 (min-max over rounds) and median p99 of each target."""
    print(title)
    for name, runs in results.items():
        p50s = [r["p50"] for r in runs]
        p99s = [r["p99"] for r in runs]
        print(
            f"  {name:<44} {statistics.median(p50s):6.3f} ({min(p50s):.3f}-{max(p50s):.3f})"
            f"   {statistics.median(p99s):6.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per target and round")
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument(
        "--pythonpath",
        action="append",
        default=[],
        help="also run an agent importing edgeserve from this directory (repeatable)",
    )
    opts = parser.parse_args()
    if shutil.which("h2load") is None:
        sys.exit(H2LOAD_MISSING)
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tests"))
    from bench_models import build_bundle
    from edgeserve.agent.store import ModelStore
    from http_load import binary_header, grpc_payload
    from support.agent import start_agent
    from support.broker import free_port

    work = Path(tempfile.mkdtemp(prefix="edgeserve-h2load-"))
    agents = []
    try:
        bundle = build_bundle(work, opts.model)
        shape = (1, 1, 28, 28) if opts.model == "cnn" else (1, 256)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        builds = [("this checkout", None), *((d, d) for d in opts.pythonpath)]
        if opts.pythonpath:
            os.chdir(work)  # so `python -c` imports edgeserve from PYTHONPATH, not a checkout
        targets: list[Target] = []
        for i, (label, path) in enumerate(builds):
            state = work / f"state-{i}"
            ModelStore(state).install(bundle)
            gport = free_port()
            env = {"PYTHONPATH": path} if path else None
            agent = start_agent(
                state, extra_args=["--no-batching", "--grpc-port", str(gport)], env=env
            )
            agents.append(agent)
            files = work / str(i)
            files.mkdir()
            mine = [http_target(files, agent.port, opts.model, binary_header(x), x.tobytes())]
            mine += grpc_targets(files, gport, opts.model, grpc_payload(opts.model, x))
            targets += [replace(t, name=f"{t.name} [{label}]") for t in mine]
        results = alternate(targets, opts.rounds, opts.seconds, work)
        print_rounds(
            f"h2load c=1, model {opts.model}, {os.cpu_count()} cores, {opts.rounds} alternated "
            f"rounds of {opts.seconds:g} s: median p50 (min-max) / median p99 ms",
            results,
        )
    finally:
        for agent in agents:
            agent.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
