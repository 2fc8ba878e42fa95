"""``edgeserve quickstart`` end to end, as a user runs it: a real process that starts a broker,
a fleet server and three agents, and must leave nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from edgeserve.fleet_server.broker.embedded import mosquitto_binary
from support.broker import Mosquitto
from support.quickstart import processes_mentioning

EDGESERVE = [sys.executable, "-c", "from edgeserve.cli import main; main()"]


def run_quickstart(
    tmp_path: Path, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [*EDGESERVE, "quickstart", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed (scripts/test)")
def test_quickstart_end_to_end(tmp_path: Path) -> None:
    broker, agents = "mosquitto", 3
    proc = run_quickstart(tmp_path)  # the default: Mosquitto when it is installed
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}\n{out[-4000:]}"

    # every step printed, with the real commands
    for n in range(1, 9):
        assert f"[{n}/8]" in out
    assert "$ edgeserve convert models/digits-v1.onnx --target onnx-cpu-int8" in out
    assert "max abs error" in out and "cosine / SNR" in out  # the converter's table
    assert f"broker: {broker} on mqtt://127.0.0.1:" in out

    # outcome: v2 active on every agent, a verdict, predictions right
    summary = re.search(r"active versions (.*); experiment verdict: (.+)", out)
    assert summary, out[-2000:]
    versions = dict(item.split("=") for item in summary.group(1).split(", "))
    assert versions == {f"dev-{i}": "v2" for i in range(1, agents + 1)}
    assert summary.group(2).strip() in ("b better", "a better", "no difference yet")
    assert re.search(r"verdict: (b better|a better|no difference yet)", out)
    for line in re.findall(r"dev-\d: 32 digits, ([\d.]+)% correct", out):
        assert float(line) >= 90.0

    # nothing left behind: the temp dir is gone, no process mentions it
    workdir = Path(re.search(r"edgeserve quickstart in (\S+)", out).group(1))  # type: ignore[union-attr]
    assert workdir.parent == tmp_path
    assert not workdir.exists()
    assert f"removed {workdir}" in out
    assert processes_mentioning(str(tmp_path)) == []


def test_quickstart_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    proc = run_quickstart(tmp_path, "--dir", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --dir {tmp_path}: directory is not empty"]
    assert (tmp_path / "something").exists()


def test_quickstart_rejects_an_unknown_broker(tmp_path: Path) -> None:
    """Bad arguments: a usage error naming the value, nothing started."""
    proc = run_quickstart(tmp_path, "--agents", "1", "--broker", "nonsense", timeout=60)
    assert proc.returncode == 2
    assert "nonsense" in proc.stderr
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_quickstart_keep_with_the_embedded_amqtt_broker(tmp_path: Path) -> None:
    """--keep leaves everything running and says how to reach it; Ctrl-C cleans up. Runs with
    the pure-Python broker, as on a machine without Mosquitto."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [*EDGESERVE, "quickstart", "--keep", "--broker", "amqtt"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(x) for x in proc.stdout],  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 200
        while not any(line.startswith("  edgeserve agent models") for line in seen):
            assert proc.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        out = "".join(seen)
        assert "broker: amqtt on mqtt://127.0.0.1:" in out
        # the printed URLs and commands work while it runs
        agent_url = re.search(r"agent dev-1\s+(http://127\.0\.0\.1:\d+)", out).group(1)  # type: ignore[union-attr]
        meta = httpx.get(f"{agent_url}/v2/models/digits", timeout=10).json()
        assert "2" in meta["versions"]
        export = re.search(r"export (EDGESERVE_FLEET_URL=\S+) (EDGESERVE_FLEET_TOKEN=\S+)", out)
        assert export
        fleet_env = dict(item.split("=", 1) for item in export.groups())
        status = subprocess.run(
            [*EDGESERVE, "fleet", "device", "list", "--json"],
            capture_output=True, text=True, env={**env, **fleet_env}, timeout=60, check=True,
        )  # fmt: skip
        assert {d["id"] for d in json.loads(status.stdout)} == {"dev-1", "dev-2", "dev-3"}
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=60)
        reader.join(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
    while not lines.empty():
        seen.append(lines.get())
    out = "".join(seen)
    assert proc.returncode == 0, out[-3000:]
    assert "active versions dev-1=v2, dev-2=v2, dev-3=v2" in out
    workdir = Path(re.search(r"edgeserve quickstart in (\S+)", out).group(1))  # type: ignore[union-attr]
    assert not workdir.exists()
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_quickstart_sigterm_mid_run_stops_everything(tmp_path: Path) -> None:
    """Interrupted while the broker, fleet server and agents run: all stopped, dir removed."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [*EDGESERVE, "quickstart"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    seen: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:  # until the agents are up
        seen.append(line)
        if line.startswith("  dev-1: http://"):
            break
    assert processes_mentioning(str(tmp_path)), "nothing running to interrupt"
    proc.send_signal(signal.SIGTERM)
    seen.extend(proc.stdout)
    proc.stdout.close()
    assert proc.wait(timeout=60) == 130, "".join(seen)
    out = "".join(seen)
    workdir = Path(re.search(r"edgeserve quickstart in (\S+)", out).group(1))  # type: ignore[union-attr]
    assert f"removed {workdir}" in out and not workdir.exists()
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_quickstart_uses_a_configured_broker(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """With a broker URL configured, the quickstart starts none and everything goes through
    that broker (one agent: the point is the broker, not the fleet)."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "EDGESERVE_BROKER_URL": mosquitto.url}
    proc = subprocess.run(
        [*EDGESERVE, "quickstart", "--agents", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
    assert f"broker: the one configured, {mosquitto.url}" in proc.stdout
    assert "active versions dev-1=v2" in proc.stdout
    assert mosquitto.process is not None and mosquitto.process.poll() is None  # not ours to stop
    assert processes_mentioning(str(tmp_path)) == []


def test_quickstart_rejects_a_bad_broker_url(tmp_path: Path) -> None:
    proc = run_quickstart(tmp_path, "--broker-url", "http://nope", timeout=60)
    assert proc.returncode == 2
    assert "must look like mqtt://host:port" in proc.stderr
    assert list(tmp_path.iterdir()) == []
