"""Helpers for the quickstart, examples and install tests: run a script, find leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["example_env", "processes_mentioning", "run_example"]

REPO = Path(__file__).resolve().parents[2]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes (other than this one) that mention ``text`` in their
    arguments or run in a directory under it."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if int(pid) != os.getpid() and (text in cmdline or cwd.startswith(text)):
            found.append(f"{pid}: {cmdline}")
    return found


def example_env(tmp_path: Path) -> dict[str, str]:
    """The environment a user has after ``pip install -e .[all]`` in a venv: its ``bin`` first
    on PATH, ``PYTHON`` pointing at its interpreter; temp files under ``tmp_path``."""
    bindir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHON": sys.executable,
        "TMPDIR": str(tmp_path),
    }


def run_example(name: str, tmp_path: Path, *args: str, timeout: float = 280) -> str:
    """Run ``examples/<name>/run.sh`` with a work dir in ``tmp_path``; return its output.

    Raises:
        AssertionError: non-zero exit (with the output) or a process left running.
    """
    work = tmp_path / "work"
    proc = subprocess.run(
        ["bash", str(REPO / "examples" / name / "run.sh"), str(work), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=example_env(tmp_path),
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name}/run.sh exited {proc.returncode}:\n{out[-5000:]}"
    left = processes_mentioning(str(tmp_path))
    assert left == [], f"{name}/run.sh left processes running: {left}"
    return out
