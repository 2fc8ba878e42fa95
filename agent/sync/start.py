"""Fleet sync for ``edgeserve agent run``: :func:`start_sync` wires a :class:`DeviceSync` to the
running agent when ``agent.toml`` has a ``[fleet]`` section (keys: :mod:`.config`).

Sync runs on its own threads (paho's network thread and one install worker), so serving never
waits on the network; activation is a hot swap on the agent's event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeserve.agent.sync.agent_adapter import AgentInstaller
from edgeserve.agent.sync.config import SyncConfig
from edgeserve.agent.sync.device import DeviceSync

__all__ = ["DeviceSync", "SyncConfig", "start_sync"]


def start_sync(agent: Any, fleet_section: Mapping[str, Any]) -> DeviceSync:
    """Start fleet sync for a started agent; returns the handle (call ``.stop()``).

    Args:
        agent: the running ``edgeserve.agent.serving.core.Agent``.
        fleet_section: the raw ``[fleet]`` table.

    Raises:
        ConfigError: a bad ``[fleet]`` section, or a missing/invalid trust anchor or keyring.
    """
    config = SyncConfig.from_mapping(fleet_section)
    sync = DeviceSync(
        config,
        AgentInstaller(agent, timeout_s=config.warmup_timeout_s),
        agent.config.state_dir,
        telemetry=agent.telemetry,
    )
    sync.start()
    return sync
