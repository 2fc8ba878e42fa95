"""Packaging: every package folder is listed in pyproject, and no generic top-level module."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping: dict[str, str] = config["package-dir"]
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *rel)))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert all(name.startswith("edgeserve") for name in listed)


def test_console_files_ship_as_package_data() -> None:
    """Every template and static file of the fleet console matches a package-data glob (the
    wheel carries them: the console needs no CDN and no build step at install)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = config["package-data"]["edgeserve.fleet_server.console"]
    console = ROOT / "fleet_server" / "console"
    files = [
        p.relative_to(console).as_posix()
        for p in console.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert any(f.startswith("templates/") for f in files)
    assert any(f.startswith("static/vendor/") for f in files)
    # setuptools globs match within one folder: "static/*" does not cover "static/vendor/x"
    missing = [
        f
        for f in files
        if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)
    ]
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"
