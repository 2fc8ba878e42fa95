"""``benchmarks/agent.py --processes 1,2``: throughput, CPU use and RSS per serving process at
32 connections, for each process count, alternated."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from agent_proc import children, cpu_s, machine_busy, rss_mb, start, stop
from http_load import wrk


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
                pids = (children(proc.pid) if n > 1 else []) or [proc.pid]
                base = f"http://127.0.0.1:{port}"
                wrk(base + url, script, 32, 1)  # warm every process's connections
                everyone = [proc.pid, *pids] if n > 1 else pids
                cpu0 = sum(cpu_s(p) for p in everyone)
                busy0, total0 = machine_busy()
                t0 = time.perf_counter()
                r = wrk(base + url, script, 32, seconds)
                wall = time.perf_counter() - t0
                busy1, total1 = machine_busy()
                cpu1 = sum(cpu_s(p) for p in everyone)
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
