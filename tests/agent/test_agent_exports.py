"""The agent's public names (pinned)."""

from __future__ import annotations

import edgeserve.agent as agent_pkg


def test_agent_exported_members() -> None:
    assert agent_pkg.__all__ == [
        "Agent",
        "AgentConfig",
        "InstalledVersion",
        "ModelStore",
        "TelemetryBuffer",
        "load_config",
        "run_agent",
    ]
    for name in agent_pkg.__all__:
        assert getattr(agent_pkg, name).__name__ == name
