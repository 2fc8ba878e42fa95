"""``kill -9`` of ``edgeserve agent install`` aimed inside its copy window, 50 times, while an
agent serves: the store stays consistent and the agent answers with the active version, every
time. Also: re-installing an installed version checks the bundle it is given."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from edgeserve.agent.store import ModelStore
from support.agent import AgentProcess, linear_reference, start_agent
from support.models import make_linear_bundle

from edgeserve.bundle import Bundle, check_bundle, write_bundle

pytestmark = pytest.mark.slow

_CLI = [sys.executable, "-c", "from edgeserve.cli import main; main()"]
_X = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
_SEEDS = {1: 0, 2: 1}  # version -> the seed its weights were made with


def _padded_v2(tmp_path: Path, pad_mib: int) -> Bundle:
    src = make_linear_bundle(tmp_path / "src2", version=2, seed=_SEEDS[2])
    pad = tmp_path / "pad.bin"
    pad.write_bytes(os.urandom(pad_mib * 1024 * 1024))  # a copy long enough to aim inside
    return write_bundle(
        tmp_path / "b2",
        src.manifest,
        {"model.onnx": (src.model_path, "model"), "pad.bin": (pad, "other")},
    )


def _temp_dirs(store: ModelStore) -> list[Path]:
    return [p for p in (store.root / "linear").iterdir() if p.name.startswith(".install-")]


def _install(bundle: Path, state: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*_CLI, "agent", "install", str(bundle), "--state", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _copy_window_s(store: ModelStore, bundle: Path) -> float:
    """How long the temp directory of one uninterrupted install exists."""
    proc = _install(bundle, store.state_dir)
    appeared = gone = None
    while proc.poll() is None or (appeared is not None and gone is None):
        present = bool(_temp_dirs(store))
        now = time.monotonic()
        if present and appeared is None:
            appeared = now
        elif not present and appeared is not None and gone is None:
            gone = now
        if proc.poll() is not None and appeared is None:
            break
        time.sleep(0.0005)
    proc.wait(30)
    assert proc.returncode == 0 and appeared is not None and gone is not None
    return gone - appeared


def _assert_consistent(store: ModelStore) -> int:
    """Every version present is complete and intact; the active one is one of them."""
    versions = store.versions("linear")
    for version in versions:
        check_bundle(store.path("linear", version))
    active = store.active_version("linear")
    assert active in versions, (active, versions)
    return active


def _answers(agent: AgentProcess, version: int, timeout_s: float = 10.0) -> bool:
    """The agent answers with ``version`` and that version's outputs (it may take up to its
    poll interval to notice an activation made by the killed process)."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = httpx.post(f"{agent.url}/v2/models/linear/infer", json=_BODY, timeout=10)
        if resp.status_code == 200 and resp.json()["model_version"] == str(version):
            y = np.reshape(resp.json()["outputs"][0]["data"], (1, 3))
            np.testing.assert_allclose(y, linear_reference(_X, seed=_SEEDS[version]), rtol=1e-5)
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_agent_install_kill9_inside_the_copy_window_50_times(
    tmp_path: Path, state_dir: Path
) -> None:
    store = ModelStore(state_dir)
    bundle = _padded_v2(tmp_path, pad_mib=16).path
    window = _copy_window_s(store, bundle)
    store.activate("linear", 1)
    store.remove("linear", 2)
    rng = random.Random(11)
    inside = answered = 0
    with start_agent(state_dir, config={"poll_interval_s": 0.1}) as agent:
        for _ in range(50):
            proc = _install(bundle, state_dir)
            deadline = time.monotonic() + 30
            while not _temp_dirs(store) and proc.poll() is None:
                assert time.monotonic() < deadline, "the install never started copying"
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.0, window))  # anywhere in the window the temp dir exists
            inside += bool(_temp_dirs(store)) and proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            active = _assert_consistent(store)
            answered += _answers(agent, active)
            if 2 in store.versions("linear"):  # the install finished first: reset to v1 only
                store.activate("linear", 1)
                store.remove("linear", 2)
                assert _answers(agent, 1)
    assert answered == 50
    assert inside >= 40, f"only {inside} of 50 kills landed inside the copy window"
    # the next install cleans the leftovers and completes
    done = subprocess.run(
        [*_CLI, "agent", "install", str(bundle), "--state", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert store.active_version("linear") == 2 and not _temp_dirs(store)


def test_agent_install_of_an_installed_version_checks_the_given_bundle(
    tmp_path: Path, state_dir: Path
) -> None:
    # the installed bundle again (the state_dir fixture's, byte for byte: a bundle made anew
    # carries another `created` time, so it would be another version's contents), with a
    # corrupted model file and the same manifest
    installed = tmp_path / "b1"
    again = shutil.copytree(installed, tmp_path / "again")
    corrupt = again / "model.onnx"
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    before = (state_dir / "models" / "linear" / "state.json").read_bytes()
    bad = subprocess.run(
        [*_CLI, "agent", "install", str(again), "--state", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "installed" not in bad.stdout
    assert "sha256" in bad.stderr or "model.onnx" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert (state_dir / "models" / "linear" / "state.json").read_bytes() == before
    # an intact copy of the installed version: said plainly, nothing copied
    intact = shutil.copytree(installed, tmp_path / "intact")
    ok = subprocess.run(
        [*_CLI, "agent", "install", str(intact), "--state", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "already installed" in ok.stdout and "nothing copied" in ok.stdout
