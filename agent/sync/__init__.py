"""Fleet sync: how a release reaches the device and becomes the version that serves.

``start`` wires one :class:`~.device.DeviceSync` (``device``) to the running agent when
``agent.toml`` has a ``[fleet]`` table (parsed by ``config``). The device receives its signed
desired state over MQTT; :class:`edgeserve.protocol_tracker.DesiredTracker` decides whether
to accept it (keyring chain, signature, device, seq), ``state`` keeps everything accepted on
disk. For each model target, ``install_pipeline`` runs one install: ``download`` fetches the
release (resumable, capped, over the lazy client of ``http_client``), then it is verified,
installed into the :class:`~edgeserve.agent.store.ModelStore`, activated and health-checked
through ``agent_adapter`` (the agent as sync sees it), and serving
(:mod:`edgeserve.agent.serving`) answers with the new version. ``reports`` tells the server
what each model did, ``telemetry`` uploads the agent's telemetry windows, ``simulator`` runs
many simulated devices in one process.

The names below are imported lazily so that importing ``edgeserve.agent.sync.config`` does not
load the MQTT client.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DeviceSync", "FleetConfig", "start_sync"]

_WHERE = {
    "DeviceSync": "edgeserve.agent.sync.device",
    "FleetConfig": "edgeserve.agent.sync.config",
    "start_sync": "edgeserve.agent.sync.start",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeserve.agent.sync' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
