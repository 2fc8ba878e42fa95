"""A small ghz-like gRPC load generator for the agent benchmark, in Python.

Debian packages no native gRPC load generator (ghz is not in its archive), so this one uses
grpcio's sync client with the least client-side work per call: the ``ModelInferRequest`` is
serialized once and sent as bytes, responses are not parsed. ``connections`` concurrent calls
run as threads spread over up to four processes (one HTTP/2 channel each, so the client is
not held to one core by the GIL); every process starts at the same instant and counts only the
calls that finish inside the measured window.

Its ceiling on the benchmark machine is printed by ``benchmarks/agent.py`` (the same load
against ``ServerLive``, which does no model work): figures near it measure the generator.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from typing import Any

import numpy as np

__all__ = ["grpc_latency", "grpc_load"]

_MAX_PROCESSES = 4


def _worker(
    target: str,
    method: str,
    payload: bytes,
    threads: int,
    start_at: float,
    seconds: float,
    out: Any,
) -> None:
    import grpc

    channel = grpc.insecure_channel(target)
    call = channel.unary_unary(method)  # bytes in, bytes out: no protobuf work here
    call(payload, timeout=30)  # connect before the window opens
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    end = start_at + seconds

    def loop(slot: int) -> None:
        mine = latencies[slot]
        while time.time() < start_at:
            time.sleep(0.0005)
        while True:
            t0 = time.perf_counter()
            try:
                call(payload, timeout=30)
            except grpc.RpcError:
                errors[slot] += 1
            done = time.time()
            if done > end:
                return
            mine.append((time.perf_counter() - t0) * 1000)

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    channel.close()
    out.send(([x for part in latencies for x in part], sum(errors)))
    out.close()


def grpc_load(
    target: str, method: str, payload: bytes, connections: int, seconds: float
) -> dict[str, float]:
    """Run ``connections`` concurrent callers for ``seconds``; req/s, p50/p99 ms, errors.

    Args:
        target: ``host:port``.
        method: full method name, ``/inference.GRPCInferenceService/ModelInfer``.
        payload: the serialized request.
        connections: concurrent calls in flight.
        seconds: measured duration.
    """
    ctx = mp.get_context("spawn")
    processes = min(connections, _MAX_PROCESSES)
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    start_at = time.time() + 1.5 + 0.2 * processes  # after every process has spawned
    pipes, procs = [], []
    for threads in shares:
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker, args=(target, method, payload, threads, start_at, seconds, send)
        )
        proc.start()
        send.close()
        pipes.append(receive)
        procs.append(proc)
    latencies: list[float] = []
    errors = 0
    for receive in pipes:
        got, errs = receive.recv()
        latencies.extend(got)
        errors += errs
    for proc in procs:
        proc.join(30)
    lat = np.asarray(latencies)
    return {
        "rps": len(lat) / seconds,
        "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "errors": float(errors),
    }


def grpc_latency(target: str, method: str, payload: bytes, seconds: float) -> dict[str, float]:
    """p50/p99 of back-to-back calls from this process (concurrency 1)."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        for _ in range(200):
            call(payload, timeout=30)
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            call(payload, timeout=30)
            times.append((time.perf_counter() - t0) * 1000)
    return {
        "p50": float(np.percentile(times, 50)),
        "p99": float(np.percentile(times, 99)),
        "rps": len(times) / seconds,
    }
