"""examples/canary-rollback runs as written: the broken v2 is stopped, every device on v1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.quickstart import REPO, example_env, processes_mentioning


@pytest.mark.slow
def test_examples_canary_rollback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples/canary-rollback/run.py"), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=280,
        env=example_env(tmp_path),
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{out[-3000:]}"
    assert "stopped by the fleet: rollout 2 paused: gate failure failed" in out
    # the audit (fleet audit --rollout 2) names the canary, its reason code and its error
    for action in (
        "rollout.start",
        "rollout.device_failed",
        "rollout.gate_failed",
        "rollout.revert",
    ):
        assert f" rollout:2 {action} (" in out, out
    assert "failed v2 in phase 10%:" in out
    assert "reason_code " in out and "error: " in out
    for i in (1, 2, 3):
        assert f"dev-{i}: active v1, answered by v1" in out
    assert "canary rollback: v2 stopped, every device on v1" in out
    assert processes_mentioning(str(tmp_path)) == []
