"""The device extras resolve for linux aarch64 from binary wheels only, on every Python we support.

A Raspberry Pi (Bookworm, glibc 2.36) or a Jetson (JetPack 6 / Ubuntu 22.04, glibc 2.35) must be
able to ``pip install edgeserve-toolkit[agent,tflite]`` (and ``[agent,grpc]``) without a compiler.
This test asks pip's resolver for the whole dependency tree of the core dependencies plus the extras
(read from pyproject.toml, so a dependency added later is checked too) with
``--only-binary=:all:`` and the aarch64 platform tags of glibc 2.17 .. 2.28, for CPython
3.10 - 3.13. A dependency without arm64 wheels for one of those Pythons makes pip fail and the
test with it.

It uses ``pip install --dry-run --report`` rather than ``pip download``: the same resolver and the
same binary-only rule, but pip reads each wheel's metadata from PyPI (PEP 658) instead of
downloading hundreds of megabytes, so the whole matrix takes seconds. ``--isolated`` keeps local
pip configuration (mirrors, find-links) out of it: the question is what PyPI offers.

Limit, documented: pip evaluates environment markers of *transitive* dependencies against the
interpreter running it, not ``--python-version`` (pypa/pip#11664); we evaluate the top-level
markers ourselves for the target, which covers everything edgeserve itself declares.

Needs PyPI. Set ``EDGESERVE_OFFLINE=1`` to skip it explicitly on a machine without network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
EXTRA_SETS = (("agent",), ("agent", "tflite"), ("agent", "grpc"))
# manylinux2014 == manylinux_2_17; pip does not expand perennial manylinux tags by itself, so
# every glibc from 2.17 to 2.28 is listed (Bookworm has 2.36, Ubuntu 22.04 has 2.35).
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 29)))
# Distributions the device must never pull (the agent's dependency rules).
FORBIDDEN_ON_DEVICE = {
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "onnx",
    "onnxconverter-common",
    "psycopg",
    "psycopg2",
    "psycopg2-binary",
    "asyncpg",
    "torch",
}

pytestmark = pytest.mark.skipif(
    os.environ.get("EDGESERVE_OFFLINE") == "1", reason="EDGESERVE_OFFLINE=1: PyPI not reachable"
)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict[str, Any]:
    """The ``[project]`` table of pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        project: dict[str, Any] = tomllib.load(fh)["project"]
    return project


def _expand(extras: tuple[str, ...], project: dict[str, Any]) -> list[Requirement]:
    """Core dependencies plus the extras, following self-references (``edgeserve-toolkit[x]``)."""
    name = _normalize(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out = [Requirement(line) for line in project.get("dependencies", [])]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise KeyError(f"pyproject.toml has no extra {extra!r}")
        for line in optional[extra]:
            req = Requirement(line)
            if _normalize(req.name) == name:
                todo.extend(sorted(req.extras))
            else:
                out.append(req)
    return out


def _target_env(python: str) -> dict[str, str]:
    env = dict(default_environment())
    env.update(
        python_version=python,
        python_full_version=f"{python}.0",
        platform_machine="aarch64",
        platform_system="Linux",
        sys_platform="linux",
        os_name="posix",
        implementation_name="cpython",
        platform_python_implementation="CPython",
    )
    return env


def requirements_for(extras: tuple[str, ...], python: str) -> list[str]:
    """The requirement strings edgeserve-toolkit[extras] asks for on aarch64 Linux with ``python``.

    Markers are evaluated here for the target (pip would evaluate them for the running
    interpreter) and dropped from the strings handed to pip.
    """
    env = _target_env(python)
    lines = []
    for req in _expand(extras, _pyproject()):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        extra = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        lines.append(f"{req.name}{extra}{req.specifier}")
    return sorted(set(lines))


_CACHE: dict[tuple[tuple[str, ...], str], dict[str, str]] = {}


def resolve(extras: tuple[str, ...], python: str, workdir: Path) -> dict[str, str]:
    """Resolve with pip for aarch64 + ``python``; return {distribution: version}.

    Raises:
        AssertionError: pip could not resolve from binary wheels (its message included).
    """
    key = (extras, python)
    if key in _CACHE:
        return _CACHE[key]
    report = workdir / f"report-{'-'.join(extras)}-{python}.json"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "--isolated",
        "--disable-pip-version-check",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
        "--target",
        str(workdir / "never-written"),
        "--report",
        str(report),
        *requirements_for(extras, python),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"edgeserve-toolkit[{','.join(extras)}] does not resolve from binary wheels for "
            "linux aarch64 "
            f"and Python {python}:\n{proc.stderr.strip()[-3000:]}",
            pytrace=False,
        )
    data = json.loads(report.read_text())
    resolved = {
        _normalize(item["metadata"]["name"]): item["metadata"]["version"]
        for item in data["install"]
    }
    _CACHE[key] = resolved
    return resolved


@pytest.fixture(scope="module")
def pip_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pip-resolve")


@pytest.mark.slow
@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("extras", EXTRA_SETS, ids=lambda e: "+".join(e))
def test_installability_aarch64_binary_wheels(
    extras: tuple[str, ...], python: str, pip_workdir: Path
) -> None:
    resolved = resolve(extras, python, pip_workdir)
    # the device's runtime is in the tree, and nothing heavy came with it
    assert "onnxruntime" in resolved
    if "tflite" in extras:
        assert {"ai-edge-litert", "tflite-runtime"} & set(resolved), resolved
    if "grpc" in extras:
        assert {"hpack", "protobuf"} <= set(resolved), resolved
        assert "grpcio" not in resolved, resolved  # the HTTP/2 server is the agent's own
    assert not FORBIDDEN_ON_DEVICE & set(resolved), sorted(FORBIDDEN_ON_DEVICE & set(resolved))


def test_installability_markers_are_evaluated_for_the_target() -> None:
    # tomli is a core dependency only below 3.11: the target decides, not the running Python
    assert any(line.startswith("tomli") for line in requirements_for(("agent",), "3.10"))
    assert not any(line.startswith("tomli") for line in requirements_for(("agent",), "3.13"))


def test_installability_expands_self_references() -> None:
    project = {
        "name": "edgeserve-toolkit",
        "dependencies": ["click>=8"],
        "optional-dependencies": {
            "a": ["x>=1"],
            "b": ["edgeserve-toolkit[a]", "y"],
            "all": ["edgeserve-toolkit[b]"],
        },
    }
    names = sorted(req.name for req in _expand(("all",), project))
    assert names == ["click", "x", "y"]
    with pytest.raises(KeyError, match="nope"):
        _expand(("nope",), project)
