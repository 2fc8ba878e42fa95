"""Fleet sync: how a release reaches the device and becomes the version that serves.

``start`` wires one :class:`~.device.DeviceSync` (``device``) to the running agent when
``agent.toml`` has a ``[fleet]`` table (parsed by ``config``). The device receives its signed
desired state over MQTT; :class:`edgeserve.protocol.tracker.DesiredTracker` decides whether
to accept it (keyring chain, signature, device, seq), ``state`` keeps everything accepted on
disk. For each model target, ``install_pipeline`` runs one install: ``download`` fetches the
release (resumable, capped, through ``http_client``, the standard library's HTTP), then it is
verified, installed into the :class:`~edgeserve.agent.store.ModelStore`, activated and
health-checked through ``agent_adapter`` (the agent as sync sees it), and serving
(:mod:`edgeserve.agent.serving`) answers with the new version. ``reports`` tells the server
what each model did, ``telemetry`` uploads the agent's telemetry windows, ``simulator`` runs
many simulated devices in one process.

The names below are imported lazily so that importing ``edgeserve.agent.sync.config`` does not
load the MQTT client.
"""

from __future__ import annotations

from edgeserve.lazy import lazy_exports

__all__ = ["DeviceSync", "SyncConfig", "start_sync"]

_WHERE = {
    "DeviceSync": "edgeserve.agent.sync.device",
    "SyncConfig": "edgeserve.agent.sync.config",
    "start_sync": "edgeserve.agent.sync.start",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
