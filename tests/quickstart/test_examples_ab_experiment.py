"""examples/ab-experiment runs as written: on-device split, sticky users, per-arm report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.quickstart import REPO, example_env, processes_mentioning


@pytest.mark.slow
def test_examples_ab_experiment(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples/ab-experiment/run.py"), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=280,
        env=example_env(tmp_path),
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{out[-3000:]}"
    shares = re.findall(r"dev-\d: users on v1 (\d+), on v2 (\d+) .*kept one version: True", out)
    assert len(shares) == 3
    for on_a, on_b in shares:
        # 30% by weight over 60 users: well inside [5, 35] users on v2
        assert int(on_a) + int(on_b) == 60 and 5 <= int(on_b) <= 35
    assert "edgeserve_ab_requests_total: {" in out and "(v2)" in out
    rows = re.findall(r"│ ([ab])\s+│ ([12])\s+│ (\d+)\s+│", out)
    assert {(arm, version) for arm, version, _ in rows} == {("a", "1"), ("b", "2")}
    assert all(int(n) > 0 for _, _, n in rows)
    assert re.search(r"experiment \d+: verdict '(b better|a better|no difference yet)'", out)
    assert processes_mentioning(str(tmp_path)) == []
