"""``edgeserve agent batch``: formats, and resuming after kill -9 without redoing work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.agent import linear_reference

_CLI = [sys.executable, "-c", "from edgeserve.cli import main; main()"]


def _batch(state: Path, inp: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *_CLI,
            "agent",
            "batch",
            "--state",
            str(state),
            "--model",
            "linear",
            "--input",
            str(inp),
            "--output",
            str(out),
            "--no-progress",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("fmt", [".npy", ".npz", ".jsonl"])
def test_agent_batch_formats(tmp_path: Path, state_dir: Path, fmt: str) -> None:
    x = np.random.default_rng(0).standard_normal((257, 4)).astype(np.float32)
    inp, out = tmp_path / f"in{fmt}", tmp_path / f"out{fmt}"
    if fmt == ".npy":
        np.save(inp, x)
    elif fmt == ".npz":
        np.savez(inp, x=x)
    else:
        inp.write_text("".join(json.dumps(row) + "\n" for row in x.tolist()))
    done = _batch(state_dir, inp, out, "--chunk-rows", "100")
    assert done.returncode == 0, done.stderr
    assert "wrote 257 rows" in done.stdout
    if fmt == ".npy":
        y = np.load(out)
    elif fmt == ".npz":
        y = np.load(out)["y"]
    else:
        y = np.array([json.loads(line) for line in out.read_text().splitlines()])
    np.testing.assert_allclose(y, linear_reference(x), rtol=1e-5, atol=1e-7)
    assert not (tmp_path / f"out{fmt}.partial").exists()


def test_agent_batch_bad_input_is_one_line_error(tmp_path: Path, state_dir: Path) -> None:
    inp = tmp_path / "in.npy"
    np.save(inp, np.zeros((3, 5), np.float32))
    done = _batch(state_dir, inp, tmp_path / "out.npy")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "shape" in done.stderr
    done = _batch(state_dir, inp, tmp_path / "out.npz")
    assert done.returncode == 2 and "format" in done.stderr


def test_agent_batch_resumes_after_kill9_without_redoing_work(
    tmp_path: Path, state_dir: Path
) -> None:
    x = np.random.default_rng(1).standard_normal((400_000, 4)).astype(np.float32)
    inp, out = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(inp, x)
    partial = tmp_path / "out.npy.partial"
    proc = subprocess.Popen(
        [
            *_CLI,
            "agent",
            "batch",
            "--state",
            str(state_dir),
            "--model",
            "linear",
            "--input",
            str(inp),
            "--output",
            str(out),
            "--no-progress",
            "--chunk-rows",
            "1000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    chunks: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        chunks = sorted(partial.glob("chunk-*.npz")) if partial.is_dir() else []
        if len(chunks) >= 5:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert not out.exists() and len(chunks) >= 5
    finished = {p.name: p.stat().st_mtime_ns for p in partial.glob("chunk-*.npz")}
    done = _batch(state_dir, inp, out, "--chunk-rows", "1000")
    assert done.returncode == 0, done.stderr
    resumed = int(done.stdout.split("(")[1].split(" resumed")[0])
    assert resumed == 1000 * len(finished)  # nothing finished was run again
    y = np.load(out)
    assert y.shape == (400_000, 3)  # nothing duplicated
    np.testing.assert_allclose(y, linear_reference(x), rtol=1e-5, atol=1e-7)
