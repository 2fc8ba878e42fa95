"""The README's ``[fleet]`` reference parses with SyncConfig and lists every key with its
default (agent/sync/config.py is the source of truth)."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from edgeserve.agent.sync.config import SyncConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

README = Path(__file__).resolve().parents[2] / "README.md"
REQUIRED = ("broker", "device", "trust_anchor")


def _block() -> str:
    section = README.read_text().split("<!-- section: trust -->", 1)[1]
    section = section.split("<!-- end: trust -->", 1)[0]
    return (
        section.split("### `[fleet]` in `agent.toml`", 1)[1].split("```toml", 1)[1].split("```")[0]
    )


def test_sync_readme_fleet_config_parses_and_shows_every_default() -> None:
    table = tomllib.loads(_block())["fleet"]
    config = SyncConfig.from_mapping(table)
    names = [f.name for f in dataclasses.fields(SyncConfig)]
    assert sorted(table) == sorted(names), "README [fleet] keys differ from SyncConfig"
    defaults = SyncConfig(broker=config.broker, device=config.device, trust_anchor=Path("a"))
    for name in names:
        if name in REQUIRED:
            assert re.search(rf"^{name} = .+# required", _block(), re.MULTILINE), name
            continue
        assert getattr(config, name) == getattr(defaults, name), f"[fleet] {name}"
