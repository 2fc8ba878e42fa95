"""The README's operator walkthrough, run exactly as written: its ``bash`` blocks marked
``<!-- operator-walkthrough -->``, as root, with Debian's Mosquitto started the way the
walkthrough (and Debian's package) starts it, so that it drops to user ``mosquitto`` before it
reads the files ``fleet broker-config`` wrote. It ends with the device serving the release.

The walkthrough uses the default ports (HTTP 8700, MQTT 1883, agent 8000); the test checks
first that they are free and says so when they are not.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.fleet import wait_for
from support.models import make_linear_bundle
from support.quickstart import processes_mentioning

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- operator-walkthrough -->"


def walkthrough_blocks() -> list[str]:
    """Every ```bash block directly after the marker, in order."""
    text = README.read_text()
    blocks = re.findall(re.escape(MARK) + r"\s*```bash\n(.*?)```", text, flags=re.S)
    assert len(blocks) == text.count(MARK) >= 2, "walkthrough markers without a bash block"
    return blocks


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def workdir() -> Iterator[Path]:
    """An operator's directory that user ``mosquitto`` can reach (not pytest's 0700 tmp)."""
    path = Path(tempfile.mkdtemp(prefix="edgeserve-walkthrough-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    pid_file = path / "fleet" / "broker" / "data" / "mosquitto.pid"
    pids = [int(pid_file.read_text())] if pid_file.is_file() else []
    pids += [int(line.split(":")[0]) for line in processes_mentioning(str(path))]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
        processes_mentioning(str(path)) or any(Path(f"/proc/{p}").exists() for p in pids)
    ):
        time.sleep(0.2)
    shutil.rmtree(path, ignore_errors=True)


def test_readme_operator_walkthrough_runs_as_written(workdir: Path) -> None:
    assert os.geteuid() == 0, "the walkthrough starts Mosquitto as root, as its package does"
    busy = [p for p in (8700, 1883, 8000) if not port_free(p)]
    assert not busy, f"the walkthrough's default ports are in use on this machine: {busy}"
    script = "\n".join(walkthrough_blocks())
    assert "user root" not in script
    # what the walkthrough assumes: a converted bundle of digits v1 in build/model-int8
    make_linear_bundle(workdir / "build" / "model-int8", name="digits", version=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESERVE_") and k != "TMPDIR"}
    env["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), env.get("PATH", ""), "/usr/sbin", "/sbin"]
    )
    env["PYTHONUNBUFFERED"] = "1"
    log_path = workdir / "walkthrough.log"
    with log_path.open("wb") as log:
        # background jobs (serve, agent) keep running after bash exits, writing to the log
        result = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=240,
            check=False,
        )
    output = log_path.read_text()
    assert result.returncode == 0, output

    # Mosquitto runs as user mosquitto and reads the generated files
    pid = int((workdir / "fleet" / "broker" / "data" / "mosquitto.pid").read_text())
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid == pwd.getpwnam("mosquitto").pw_uid

    fleet = [
        sys.executable,
        "-c",
        "from edgeserve.cli import main; main()",
        "fleet",
        "--config",
        str(workdir / "fleet" / "fleet.toml"),
    ]

    def device() -> dict | None:
        out = subprocess.run(
            [*fleet, "device", "list", "--json"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        found = {d["id"]: d for d in json.loads(out.stdout)}.get("pi-kitchen-01")
        return found if found and found["models"].get("digits", {}).get("active") == 1 else None

    got = wait_for(device, 120, "pi-kitchen-01 active on digits v1", interval_s=1.0)
    assert got["models"]["digits"] == {"state": "ACTIVE", "active": 1}
    assert got["presence"] == "online"
    # and the agent serves v1 on its default port
    answer = httpx.post(
        "http://127.0.0.1:8000/v2/models/digits/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4}]},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == "1", answer.text

    # the server said where it is, that the broker was not there yet, and when it came
    output = log_path.read_text()
    assert "fleet server on http://127.0.0.1:8700" in output
    assert "broker mqtt://127.0.0.1:1883: refused" in output, output
    assert "broker mqtt://127.0.0.1:1883: connected again as fleet-server" in output, output
    # under the logger name the README shows
    logged = "edgeserve.fleet_server.broker.status: broker mqtt://127.0.0.1:1883: connected again"
    assert logged in output and logged in README.read_text(), output
    health = httpx.get("http://127.0.0.1:8700/healthz", timeout=5).json()
    assert health["broker"]["state"] == "connected"
