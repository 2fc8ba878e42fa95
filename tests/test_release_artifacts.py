"""Release artifacts: ``python -m build`` makes an sdist and a wheel (the wheel built from the
sdist, as build does by default, so the sdist is complete) that ``twine check --strict``
accepts; the wheel carries the device profiles, the systemd unit and the install script, and
puts nothing at the top level of site-packages but ``edgeserve``."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from edgeserve import __version__

REPO = Path(__file__).resolve().parents[1]
NAME = "edgeserve-toolkit"
STEM = f"edgeserve_toolkit-{__version__}"
DEVICE_FILES = {
    "edgeserve-agent.service",
    "install-agent.sh",
    "rpi4.toml",
    "rpi5.toml",
    "jetson-orin-nano.toml",
    "x86_64.toml",
}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist + wheel of this tree, built from a copy (setuptools writes egg-info in-tree)."""
    work = tmp_path_factory.mktemp("release")
    src = work / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    out = work / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def test_build_gives_one_sdist_and_one_wheel_twine_accepts(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        f"{STEM}-py3-none-any.whl",
        f"{STEM}.tar.gz",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2


def test_wheel_metadata_and_contents(dist: Path) -> None:
    with zipfile.ZipFile(dist / f"{STEM}-py3-none-any.whl") as whl:
        names = set(whl.namelist())
        meta = email.parser.Parser().parsestr(whl.read(f"{STEM}.dist-info/METADATA").decode())
        entry_points = whl.read(f"{STEM}.dist-info/entry_points.txt").decode()
        unit = whl.read("edgeserve/device_profiles/edgeserve-agent.service").decode()
    assert (meta["Name"], meta["Version"]) == (NAME, __version__)
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "edgeserve = edgeserve.cli:main" in entry_points
    assert {f"edgeserve/device_profiles/{f}" for f in DEVICE_FILES} <= names
    assert "ExecStart=@VENV@/bin/edgeserve agent run --config @CONFIG@" in unit
    assert {"edgeserve/py.typed", "edgeserve/agent/__init__.py"} <= names
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"edgeserve", f"{STEM}.dist-info"}


def test_sdist_carries_the_sources_the_wheel_is_built_from(dist: Path) -> None:
    with tarfile.open(dist / f"{STEM}.tar.gz") as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "edgeserve/__init__.py", "agent/__init__.py"} <= names
    assert {f"devices/{f}" for f in DEVICE_FILES} <= names
