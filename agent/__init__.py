"""The on-device agent: model store, runtimes, dynamic batching, OIP v2 API, telemetry.

The public names below are imported lazily (PEP 562) so that ``edgeserve agent models`` and
fleet sync do not pay for ONNX Runtime and prometheus_client when they do not need them.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Agent",
    "AgentConfig",
    "InstalledVersion",
    "ModelStore",
    "TelemetryBuffer",
    "load_config",
    "run_agent",
]

_WHERE = {
    "Agent": "edgeserve.agent.serving.core",
    "AgentConfig": "edgeserve.agent.config",
    "InstalledVersion": "edgeserve.agent.store",
    "ModelStore": "edgeserve.agent.store",
    "TelemetryBuffer": "edgeserve.agent.serving.telemetry",
    "load_config": "edgeserve.agent.config",
    "run_agent": "edgeserve.agent.runner",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeserve.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
