"""The README's agent.toml reference parses, and documents every key with its default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from edgeserve.agent.config import (
    AgentConfig,
    BatchingConfig,
    RuntimeConfig,
    ServerConfig,
    TelemetryConfig,
    load_config,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def _block() -> str:
    section = README.read_text().split("<!-- section: agent -->", 1)[1]
    section = section.split("<!-- end: agent -->", 1)[0]
    return section.split("### `agent.toml`", 1)[1].split("```toml", 1)[1].split("```", 1)[0]


def test_agent_readme_config_parses(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(_block())
    config = load_config(path)
    assert config.model("digits").labels == {"stable": 3, "canary": 4}
    assert config.splits["digits-ab"].weight_b == 0.1


def test_agent_readme_config_lists_every_key_with_its_default() -> None:
    block = _block()
    tables = {
        "server": ServerConfig(),
        "runtime": RuntimeConfig(),
        "batching": BatchingConfig(),
        "telemetry": TelemetryConfig(),
    }
    for table, default in tables.items():
        body = block.split(f"[{table}]", 1)[1].split("\n[", 1)[0]
        for field in dataclasses.fields(default):
            match = re.search(rf"^{field.name} = (.+?)\s+#", body, re.MULTILINE)
            assert match, f"[{table}] {field.name} is not documented"
            value = getattr(default, field.name)
            shown = match.group(1)
            expected = (
                {True: "true", False: "false"}.get(value) if isinstance(value, bool) else None
            )
            if expected is None:
                expected = '""' if value == "" else "[]" if value == () else repr(value)
            if isinstance(value, str) and value:
                expected = f'"{value}"'
            assert shown == expected, f"[{table}] {field.name}: README {shown}, default {expected}"
    for name in ("state_dir", "key_header", "poll_interval_s"):
        assert re.search(rf"^{name} = ", block, re.MULTILINE), name
    assert AgentConfig().key_header == "x-request-key"
