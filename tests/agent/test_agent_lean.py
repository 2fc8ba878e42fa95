"""What a serving ``edgeserve agent run`` leaves unloaded until it needs it (each would cost
idle RSS), and that what it loads late still works: the telemetry buffer opens when the first
window is written."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from edgeserve.agent.serving.telemetry import TelemetryBuffer
from support.agent import start_agent

#: never imported by the agent: its telemetry buffer is a file of JSON lines
_NEVER = {"sqlite3", "_sqlite3"}

#: imported only to install or write a bundle (shutil, tempfile, hashlib), check a token or a
#: keyed split (hashlib) or resolve a host name (the idna codec)
_LATE = _NEVER | {
    "hashlib",
    "_hashlib",
    "hmac",
    "shutil",
    "tempfile",
    "bz2",
    "lzma",
    "encodings.idna",
}


def _imported(log: str) -> set[str]:
    """Module names from ``-X importtime`` lines."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_serving_agent_loads_no_sqlite_hashlib_shutil_or_resolver_until_it_needs_them(
    state_dir: Path,
) -> None:
    agent = start_agent(state_dir, env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]}
        assert httpx.post(f"{agent.url}/v2/models/linear/infer", json=body).status_code == 200
        imported = _imported(agent.log())
        assert "edgeserve.agent.runner" in imported
        assert not imported & _LATE
        # the listening socket is bound without the loop's resolver: no libuv thread pool
        pid = agent.process.pid
        names = {
            Path(f"/proc/{pid}/task/{t}/comm").read_text().strip()
            for t in os.listdir(f"/proc/{pid}/task")
        }
        assert "libuv-worker" not in names
    finally:
        assert agent.stop() == 0
    # the window that counted the request was written on the way out, buffer opened then
    assert not _imported(agent.log()) & _NEVER
    buffer = TelemetryBuffer(state_dir / "telemetry.jsonl", max_bytes=1_000_000)
    try:
        records = [record for _, record in buffer.pending(10)]
    finally:
        buffer.close()
    assert [(r["model"], r["requests"]) for r in records] == [("linear", 1)]


#: what a plain ``agent run --state`` (no agent.toml) serving a bundle without a sample file
#: does not use before a request asks for it: the TOML parser, the sample file's reader, the
#: post-activation health check (fleet sync's)
_UNUSED_AT_START = {
    "tomllib",
    "tomli",
    "edgeserve.bundle.sample",
    "edgeserve.agent.serving.health",
}


def test_agent_without_config_file_or_sample_imports_no_toml_sample_or_health_code(
    state_dir: Path,
) -> None:
    agent = start_agent(state_dir, env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        imported = _imported(agent.log())
        assert "edgeserve.agent.serving.core" in imported
        assert not imported & _UNUSED_AT_START
    finally:
        assert agent.stop() == 0
