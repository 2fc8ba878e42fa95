"""The on-device agent: model store, runtimes, dynamic batching, OIP v2 API, telemetry, fleet sync.

How the folders fit:

- an inference request: :mod:`.http` (REST: server, routes, codec) or :mod:`.grpc` ->
  :mod:`.serving` (the agent core, its routing table, the batcher, a loaded version) -> a
  runtime from :mod:`edgeserve.runtimes`;
- a release to the device: :mod:`.sync` (signed desired state over MQTT, download, verify,
  install pipeline) -> :mod:`.store` (the versions on disk) -> :mod:`.serving` (hot swap to the
  new version, health check, rollback).

:mod:`.cli` is ``edgeserve agent``, :mod:`.runner` starts the servers for ``agent run`` and
:mod:`.supervisor` runs several of them (``--processes``); :mod:`.offline` is ``edgeserve agent
batch`` (files in, predictions out). :mod:`.config` reads ``agent.toml``, :mod:`.names` holds
the rules for model names and versions. ``core`` and ``telemetry`` at this level are aliases
of :mod:`.serving.core` and :mod:`.serving.telemetry` kept for their documented import paths.

The public names below are imported lazily (PEP 562) so that ``edgeserve agent models`` and
fleet sync do not pay for ONNX Runtime and prometheus_client when they do not need them.
"""

from __future__ import annotations

from edgeserve.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
