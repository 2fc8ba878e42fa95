"""Where an agent's start time goes, for ``lean_start.py``: what the agent's start path imports
that a bare stdlib + ONNX Runtime server does not (``-X importtime`` self times), the share of
its own modules spent making dataclasses, and whether a thread would overlap the start's
largest parts. Each probe runs in a fresh interpreter (the one given: a device-like install).
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, check=True)


_AGENT_IMPORTS = (
    "import edgeserve.cli, edgeserve.agent.run_args, edgeserve.agent.runner, uvloop\n"
    "import edgeserve.agent.http.routes, edgeserve.agent.http.server\n"
    "import edgeserve.agent.serving.core, edgeserve.agent.serving.loaded\n"
    "import edgeserve.runtimes.onnx, onnxruntime\n"
)
_BARE_IMPORTS = "import json, http.server, numpy, onnxruntime\n"
# top-level packages the agent-only import time is summed by; the rest counts as "other"
_GROUPS = ("edgeserve", "asyncio", "logging")
# Time spent making dataclasses while the agent's start path is imported (numpy, onnxruntime
# and asyncio first, so that only the agent's own classes count).
_DATACLASSES = (
    "import time, dataclasses, numpy, onnxruntime, asyncio, logging\n"
    "spent, made, process = [0.0], [0], dataclasses._process_class\n"
    "def timed(*args, **kwargs):\n"
    "    t = time.perf_counter()\n"
    "    try:\n"
    "        return process(*args, **kwargs)\n"
    "    finally:\n"
    "        spent[0] += time.perf_counter() - t\n"
    "        made[0] += 1\n"
    "dataclasses._process_class = timed\n"
    "t = time.perf_counter()\n"
    + _AGENT_IMPORTS
    + "print(made[0], spent[0] * 1000, (time.perf_counter() - t) * 1000)\n"
)


def _self_times(python: Path, cwd: Path, code: str) -> dict[str, int]:
    """Self import time (µs) of each module ``code`` imports (``-X importtime``)."""
    times = {}
    for line in _run(python, cwd, "-X", "importtime", "-c", code).stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            own, _, name = line[len("import time:") :].split("|")
            if own.strip().isdigit():
                times[name.strip()] = int(own)
    return times


def print_start_imports(python: Path, cwd: Path, runs: int = 7) -> None:
    """Print what the agent imports that the bare server does not, and the reverse (median
    self times over ``runs`` alternated runs), and its own modules' dataclass making."""
    agent_runs, bare_runs, made = [], [], []
    for _ in range(runs):
        agent_runs.append(_self_times(python, cwd, _AGENT_IMPORTS))
        bare_runs.append(_self_times(python, cwd, _BARE_IMPORTS))
        out = _run(python, cwd, "-c", _DATACLASSES).stdout.split()
        made.append((int(out[0]), float(out[1]), float(out[2])))

    def only(runs_a: list[dict[str, int]], runs_b: list[dict[str, int]]) -> dict[str, float]:
        names = set(runs_a[0]) - set(runs_b[0])
        return {n: statistics.median(r.get(n, 0) for r in runs_a) / 1000 for n in names}

    agent_only, bare_only = only(agent_runs, bare_runs), only(bare_runs, agent_runs)
    groups: dict[str, dict[str, float]] = {}
    for name, ms in agent_only.items():
        top = name.split(".")[0]
        groups.setdefault(top if top in _GROUPS else "other", {})[name] = ms

    def spent_in(group: str) -> float:
        return sum(groups.get(group, {}).values())

    def largest(times: dict[str, float], count: int) -> str:
        return ", ".join(
            n for _, n in sorted(((ms, n) for n, ms in times.items()), reverse=True)[:count]
        )

    print(f"\nimports, median self time of {runs} alternated runs of -X importtime (ms):")
    print(
        f"  agent only: {sum(agent_only.values()):.1f} in {len(agent_only)} modules; its own "
        f"{spent_in('edgeserve'):.1f}, asyncio {spent_in('asyncio'):.1f}, logging "
        f"{spent_in('logging'):.1f}, others {spent_in('other'):.1f} "
        f"({largest(groups.get('other', {}), 6)})"
    )
    print(
        f"  bare server only: {sum(bare_only.values()):.1f} in {len(bare_only)} modules "
        f"({largest(bare_only, 5)})"
    )
    classes = made[0][0]
    spent = statistics.median(m[1] for m in made)
    total = statistics.median(m[2] for m in made)
    print(
        f"  the agent's own start-path modules, imported after numpy, onnxruntime and asyncio: "
        f"{total:.1f} ms wall, of which making its {classes} dataclasses {spent:.1f} ms"
    )


# Does a thread overlap the start's two largest parts? Importing onnxruntime on a thread while
# the main thread imports the event loop's modules, against one after the other; and creating
# sessions on a thread beside pure-Python work, against one after the other.
_OVERLAP_IMPORTS = """
import sys, threading, time
t = time.perf_counter()
import numpy
if sys.argv[1] == "thread":
    worker = threading.Thread(target=lambda: __import__("onnxruntime"))
    worker.start()
else:
    import onnxruntime
import asyncio, logging, uvloop, httptools, orjson
if sys.argv[1] == "thread":
    worker.join()
print((time.perf_counter() - t) * 1000)
"""
_OVERLAP_SESSIONS = """
import sys, threading, time
import numpy, onnxruntime as ort
def session():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
def sessions():
    for _ in range(50):
        session()
def spin():
    x = 0
    for i in range(3_000_000):
        x += i
session()
t = time.perf_counter(); sessions(); alone = time.perf_counter() - t
t = time.perf_counter(); spin(); alone += time.perf_counter() - t
worker = threading.Thread(target=sessions)
t = time.perf_counter(); worker.start(); spin(); worker.join(); together = time.perf_counter() - t
print(alone * 1000, together * 1000)
"""


def print_overlap(python: Path, cwd: Path, model: Path, runs: int = 6) -> None:
    """Print whether a thread shortens the start (alternated runs, ranges in ms)."""
    timings: dict[str, list[float]] = {"serial": [], "thread": [], "alone": [], "together": []}
    for _ in range(runs):
        for how in ("serial", "thread"):
            timings[how].append(float(_run(python, cwd, "-c", _OVERLAP_IMPORTS, how).stdout))
        out = _run(python, cwd, "-c", _OVERLAP_SESSIONS, str(model)).stdout.split()
        timings["alone"].append(float(out[0]))
        timings["together"].append(float(out[1]))

    def span(key: str) -> str:
        vals = timings[key]
        return f"{statistics.median(vals):.0f} ({min(vals):.0f}-{max(vals):.0f})"

    print(f"\noverlap on a thread ({runs} alternated runs, median (min-max) ms):")
    print(
        f"  numpy, onnxruntime, asyncio, logging, uvloop, httptools, orjson: one after the other "
        f"{span('serial')}, onnxruntime on a thread {span('thread')}"
    )
    print(
        f"  50 sessions of the model and a pure-Python loop: one after the other {span('alone')},"
        f" side by side {span('together')}"
    )
