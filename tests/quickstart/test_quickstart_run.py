"""``edgeserve quickstart`` end to end, as a user runs it: a real process that starts a broker,
a fleet server and three agents, and must leave nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from edgeserve.fleet_server.embedded_broker import mosquitto_binary
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
@pytest.mark.parametrize(
    ("broker", "agents"),
    [
        pytest.param(
            "mosquitto",
            3,
            marks=pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
        ),
        ("amqtt", 3),
    ],
)
def test_quickstart_end_to_end(tmp_path: Path, broker: str, agents: int) -> None:
    proc = run_quickstart(tmp_path, "--broker", broker, "--agents", str(agents))
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}\n{out[-4000:]}"

    # every step printed, with the real commands
    for n in range(1, 9):
        assert f"[{n}/8]" in out
    assert "$ edgeserve convert models/digits-v1.onnx --target onnx-cpu-int8" in out
    assert "cosine similarity" in out  # the converter's table
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
