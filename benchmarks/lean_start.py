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

Both run from a virtual environment as a device has one (``agent_proc.device_python``): the
project installed from its wheel, compiled to bytecode by pip, not the editable install of a
checkout, whose import hook alone costs every Python start there ~17 ms (``-X importtime`` of
``-c pass``: 17.5 ms for the finder, 21.6 ms for ``site``; 2026-12-07). The import and thread
lines come from :mod:`start_costs`.

Usage::

    .venv/bin/python benchmarks/lean_start.py [--model cnn|mlp] [--rounds 5]

Needs the ``convert`` extra (onnx) to build the model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from agent_proc import device_python, free_port, rss_mb, stop, wait_ready  # noqa: E402
from bench_models import build_bundle  # noqa: E402
from start_costs import print_overlap, print_start_imports  # noqa: E402

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
        print_start_imports(python, work)
        print_overlap(python, work, bundle / "model.onnx")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
