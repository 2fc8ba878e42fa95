"""The distribution's own name on PyPI (``edgeserve`` there is an unrelated project): in the
installed metadata, ``edgeserve --version``, the device installer's default, and every install
line the project prints or documents."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeserve import __version__
from edgeserve.cli import DISTRIBUTION

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
NAME = "edgeserve-toolkit"


def test_metadata_name_and_version_are_ours() -> None:
    assert DISTRIBUTION == NAME
    meta = importlib.metadata.metadata(NAME)
    assert meta["Name"] == NAME
    assert meta["Version"] == __version__
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == NAME
    # the `all` extra refers to this distribution, not to the other project
    assert project["optional-dependencies"]["all"][0].startswith(f"{NAME}[")


def test_version_prints_distribution_name_and_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from edgeserve.cli import main; main()", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{NAME} {__version__}"


def _dry_run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run(
        ["bash", str(script), "--dry-run", "--profile", "rpi5", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_installer_defaults_to_our_distribution_outside_a_checkout(tmp_path: Path) -> None:
    # the script as a device gets it: devices/ alone (or from the wheel), no pyproject above it
    devices = tmp_path / "devices"
    shutil.copytree(REPO / "devices", devices)
    proc = _dry_run(devices / "install-agent.sh", "--root", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert f"with {NAME}[agent,tflite] " in proc.stdout
    assert f"--upgrade {NAME}\\[agent\\,tflite\\]\n" in proc.stdout
    assert " edgeserve\\[" not in proc.stdout and "file://" not in proc.stdout


def test_installer_in_a_checkout_installs_the_checkout(tmp_path: Path) -> None:
    proc = _dry_run(REPO / "devices" / "install-agent.sh", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"with {NAME}[agent,tflite] @ file://{REPO}" in proc.stdout


@pytest.mark.parametrize(
    ("spec", "requirement"),
    [
        (f"{NAME}>=0.1", f"{NAME}[agent,tflite]>=0.1"),
        (f"{NAME}==0.1.0", f"{NAME}[agent,tflite]==0.1.0"),
    ],
    ids=["at-least", "pinned"],
)
def test_installer_keeps_a_version_spec(tmp_path: Path, spec: str, requirement: str) -> None:
    proc = _dry_run(
        REPO / "devices" / "install-agent.sh", "--root", str(tmp_path), "--package", spec
    )
    assert proc.returncode == 0, proc.stderr
    assert f"with {requirement} " in proc.stdout


def test_installer_refuses_the_other_projects_name(tmp_path: Path) -> None:
    proc = _dry_run(
        REPO / "devices" / "install-agent.sh", "--root", str(tmp_path), "--package", "edgeserve"
    )
    assert proc.returncode == 1
    assert f"--package edgeserve: expected {NAME}" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_no_install_line_names_the_other_project() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for rel in tracked:
        path = REPO / rel
        if path.suffix not in {".py", ".md", ".sh", ".toml", ".txt", ""} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            # the bare name with extras, or pip-installed bare: that is the other project
            if re.search(r"(?<![\w-])edgeserve\[|pip install '?edgeserve(?![\w-])", line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []
