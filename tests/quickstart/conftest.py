"""Fixtures for the quickstart, examples and device-install tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def edgeserve_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this tree, built from a copy (setuptools builds in-tree and leaves build/),
    with pip's build isolation: a venv made by ``python -m venv`` on Python >= 3.12 has no
    setuptools of its own."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            "tests",
            "benchmarks",
            ".pytest_cache",
            ".ruff_cache",
            ".hypothesis",
        ),
    )
    out = work / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = out.glob("edgeserve_toolkit-*.whl")
    return wheel
