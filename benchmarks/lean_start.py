"""Lean start: idle RSS and cold start of ``edgeserve agent run`` against a bare server.

The bare server is the least a Python model server can be: the standard library's
``http.server`` and an ONNX Runtime session (one intra-op thread, as the agent's default) on
the same model, answering ``/v2/health/ready`` and OIP v2 JSON ``infer``. Both are started
alternately over ``--rounds`` rounds; each round measures spawn to the first
``/v2/health/ready`` 200 (cold start), RSS at ready, and RSS after 200 JSON requests and a
second of rest (idle RSS). The agent runs twice per round: with its defaults, and with
``[telemetry] interval_s = 1``, so that a telemetry window that counted the requests has
opened its telemetry buffer (a journal file, opened on first use) before the idle figure;
with the default 60 s an agent gets there a minute after its first request. Prints medians
with the spread; then where the agent's extra start time goes (what it imports that the bare
server does not, and the reverse, from ``-X importtime``; the share of its own modules spent
making dataclasses), and whether a thread would shorten the start (onnxruntime imported, or
sessions created, beside other work).

Both run from a virtual environment as a device has one (:func:`device_python`): the project
installed from its wheel, compiled to bytecode by pip, not the editable install of a checkout,
whose import hook alone costs every Python start there ~17 ms (``-X importtime`` of
``-c pass``: 17.5 ms for the finder, 21.6 ms for ``site``; 2026-12-07).

Usage::

    .venv/bin/python benchmarks/lean_start.py [--model cnn|mlp] [--rounds 5]

Needs the ``convert`` extra (onnx) to build the model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import site as sitelib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from agent_proc import free_port, rss_mb, stop, wait_ready  # noqa: E402
from bench_models import build_bundle  # noqa: E402

_CLI = ["-c", "from edgeserve.cli import main; main()"]

BARE = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
import numpy as np
import onnxruntime as ort

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
session.run(None, {name: np.zeros([1, *session.get_inputs()[0].shape[1:]], np.float32)})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200 if self.path == "/v2/health/ready" else 404, b"{}")

    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers["content-length"])))
        tensor = doc["inputs"][0]
        x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
        (y,) = session.run(None, {name: x})
        out = {"outputs": [{"name": "y", "datatype": "FP32", "shape": list(y.shape),
                            "data": y.ravel().tolist()}]}
        self.reply(200, json.dumps(out).encode())


HTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
"""


def device_python(work: Path) -> Path:
    """The interpreter of a virtual environment under ``work`` laid out as a device's: this
    checkout installed from a wheel built from a copy of it (so the checkout gets no
    ``build/``), pip's bytecode beside it, and the running environment's site-packages for the
    dependencies, added by a path file so that none of its own path files (the editable
    install's finder) runs at start."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text("\n".join(sitelib.getsitepackages()) + "\n")
    source = work / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".*", "build", "dist", "__pycache__", "*.egg-info"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            # this environment's setuptools when it has one (Python 3.12+ venvs do not)
            *(["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []),
            "--disable-pip-version-check",
            "--target",
            site,
            str(source),
        ],
        check=True,
    )
    return python


def _measure(
    cmd: list[str], port: int, body: bytes, url: str, cwd: Path, expect: Path | None = None
) -> dict[str, float]:
    """Cold start, RSS at ready and idle RSS of ``cmd`` started in ``cwd``; ``expect``: a file
    that must exist when the idle RSS is read."""
    import http.client

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        cold = wait_ready(port, proc) - t0
        time.sleep(0.3)
        at_ready = rss_mb(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(200):
            conn.request("POST", url, body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{cmd[0]}: {resp.status}")
        conn.close()
        time.sleep(1.0)
        idle = rss_mb(proc.pid)
        if expect is not None and not expect.exists():
            raise RuntimeError(f"{expect} does not exist yet")
        return {"cold_ms": cold * 1000, "ready_mb": at_ready, "idle_mb": idle}
    finally:
        stop(proc)


_AGENT_IMPORTS = (
    "import edgeserve.cli, edgeserve.agent.run_args, edgeserve.agent.runner, uvloop\n"
    "import edgeserve.agent.http.routes, edgeserve.agent.http.server\n"
    "import edgeserve.agent.serving.core, edgeserve.agent.serving.loaded\n"
    "import edgeserve.runtimes.onnx, onnxruntime\n"
)
_BARE_IMPORTS = "import json, http.server, numpy, onnxruntime\n"
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
    out = subprocess.run(
        [str(python), "-X", "importtime", "-c", code], cwd=cwd, capture_output=True, text=True
    ).stderr
    times = {}
    for line in out.splitlines():
        if line.startswith("import time:") and "|" in line:
            own, _, name = line[len("import time:") :].split("|")
            if own.strip().isdigit():
                times[name.strip()] = int(own)
    return times


def _start_imports(python: Path, cwd: Path, runs: int = 7) -> None:
    """Print what the agent imports that the bare server does not, and the reverse (median
    self times over ``runs`` alternated runs), and its own modules' dataclass making."""
    agent_runs, bare_runs, made = [], [], []
    for _ in range(runs):
        agent_runs.append(_self_times(python, cwd, _AGENT_IMPORTS))
        bare_runs.append(_self_times(python, cwd, _BARE_IMPORTS))
        out = subprocess.run(
            [str(python), "-c", _DATACLASSES], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.split()
        made.append((int(out[0]), float(out[1]), float(out[2])))

    def only(runs_a: list[dict[str, int]], runs_b: list[dict[str, int]]) -> dict[str, float]:
        names = set(runs_a[0]) - set(runs_b[0])
        return {n: statistics.median(r.get(n, 0) for r in runs_a) / 1000 for n in names}

    agent_only, bare_only = only(agent_runs, bare_runs), only(bare_runs, agent_runs)
    groups: dict[str, float] = {}
    for name, ms in agent_only.items():
        top = name.split(".")[0]
        key = top if top in ("edgeserve", "asyncio", "logging") else "other"
        groups[key] = groups.get(key, 0.0) + ms

    def largest(times: dict[str, float], count: int) -> str:
        return ", ".join(
            n for _, n in sorted(((ms, n) for n, ms in times.items()), reverse=True)[:count]
        )

    others = {
        n: ms
        for n, ms in agent_only.items()
        if not n.startswith(("edgeserve", "asyncio", "logging"))
    }
    print(f"\nimports, median self time of {runs} alternated runs of -X importtime (ms):")
    print(
        f"  agent only: {sum(agent_only.values()):.1f} in {len(agent_only)} modules; its own "
        f"{groups.get('edgeserve', 0):.1f}, asyncio {groups.get('asyncio', 0):.1f}, logging "
        f"{groups.get('logging', 0):.1f}, others {groups.get('other', 0):.1f} "
        f"({largest(others, 6)})"
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


def _overlap(python: Path, cwd: Path, model: Path, runs: int = 6) -> None:
    """Print whether a thread shortens the start (alternated runs, ranges in ms)."""
    timings: dict[str, list[float]] = {"serial": [], "thread": [], "alone": [], "together": []}
    for _ in range(runs):
        for how in ("serial", "thread"):
            out = subprocess.run(
                [str(python), "-c", _OVERLAP_IMPORTS, how],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            timings[how].append(float(out))
        out = subprocess.run(
            [str(python), "-c", _OVERLAP_SESSIONS, str(model)],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    from edgeserve.agent.store import ModelStore

    work = Path(tempfile.mkdtemp(prefix="edgeserve-lean-"))
    try:
        python = device_python(work)
        bundle = build_bundle(work, opts.model)
        state = work / "state"
        ModelStore(state).install(bundle)
        shape = (1, 1, 28, 28) if opts.model == "cnn" else (1, 256)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        body = json.dumps(
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
        ).encode()
        url = f"/v2/models/{opts.model}/infer"
        bare_py = work / "bare.py"
        bare_py.write_text(BARE)
        results: dict[str, list[dict[str, float]]] = {"bare": [], "agent": [], "window": []}
        for i in range(opts.rounds):
            port = free_port()
            cmd = [str(python), str(bare_py), str(bundle / "model.onnx"), str(port)]
            results["bare"].append(_measure(cmd, port, body, url, work))
            port = free_port()
            cmd = [str(python), *_CLI, "agent", "run", "--state", str(state), "--port", str(port)]
            results["agent"].append(_measure(cmd, port, body, url, work))
            window_state = work / f"state-window-{i}"
            shutil.copytree(state, window_state)
            toml = work / f"agent-window-{i}.toml"
            toml.write_text(f'state_dir = "{window_state}"\n[telemetry]\ninterval_s = 1\n')
            port = free_port()
            cmd = [str(python), *_CLI, "agent", "run", "--config", str(toml), "--port", str(port)]
            buffer = window_state / "telemetry.jsonl"
            results["window"].append(_measure(cmd, port, body, url, work, expect=buffer))
        print(
            f"lean start — model {opts.model}, {opts.rounds} alternated rounds, median (min-max)"
            ", both from a device-like install (wheel, not editable)"
        )
        print("                          cold start ms        RSS at ready MB     idle RSS MB")
        rows = (
            ("bare", "stdlib http.server + ORT"),
            ("agent", "edgeserve agent run"),
            ("window", "  after telemetry window"),
        )
        for key, title in rows:
            cells = []
            for field in ("cold_ms", "ready_mb", "idle_mb"):
                vals = [r[field] for r in results[key]]
                fmt = "{:.0f}" if field == "cold_ms" else "{:.1f}"
                cells.append(
                    f"{fmt.format(statistics.median(vals))} "
                    f"({fmt.format(min(vals))}-{fmt.format(max(vals))})"
                )
            print(f"  {title:<24} {cells[0]:<20} {cells[1]:<19} {cells[2]}")
        med = {
            k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in results.items()
        }
        print(
            f"  agent - bare: cold start {med['agent']['cold_ms'] - med['bare']['cold_ms']:+.0f}"
            f" ms, idle RSS {med['agent']['idle_mb'] - med['bare']['idle_mb']:+.1f} MB"
            f" ({med['window']['idle_mb'] - med['bare']['idle_mb']:+.1f} MB after a telemetry"
            " window)"
        )
        _start_imports(python, work)
        _overlap(python, work, bundle / "model.onnx")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
