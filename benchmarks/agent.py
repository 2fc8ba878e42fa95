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
  without it also after the first telemetry window, once the telemetry buffer is open;
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
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from agent_proc import compile_sources, free_port, rss_mb, start, stop  # noqa: E402
from agent_processes import processes_comparison  # noqa: E402
from agent_rss import print_fleet_rss  # noqa: E402
from bench_models import build_bundle  # noqa: E402
from grpc_load import grpc_latency, grpc_load  # noqa: E402
from http_load import HttpClient, binary_header, grpc_payload, lua_script, wrk  # noqa: E402
from native_latency import (  # noqa: E402
    H2LOAD_MISSING,
    alternate,
    grpc_targets,
    http_target,
    print_rounds,
)

INFER = "/inference.GRPCInferenceService/ModelInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"


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
        json_lua = lua_script(json_body, {"Content-Type": "application/json"}, work / "json.lua")
        bin_lua = lua_script(
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
