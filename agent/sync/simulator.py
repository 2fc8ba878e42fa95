"""Many simulated devices in one process: the real :class:`~.device.DeviceSync` (MQTT,
signatures, downloads, file checks, state machine) with a stand-in runtime.

Used by ``benchmarks/fleet.py`` and the fleet server's tests. All devices share one
:class:`~edgeserve.mqtt.MqttLoop` network thread, one httpx connection pool and one small
install executor, so 1,000 devices cost a few threads, not thousands.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from edgeserve.agent.sync.config import SyncConfig
from edgeserve.agent.sync.device import DeviceSync

from edgeserve.bundle import read_bundle
from edgeserve.bundle.manifest import Manifest
from edgeserve.errors import ModelError, NotFoundError
from edgeserve.mqtt import MqttLoop

__all__ = ["SimulatedDevice", "SimulatedFleet", "SimulatedInstaller"]

FAIL_HEALTH = "fail_health"  # manifest validation["simulate"]: the health check fails
FAIL_LOAD = "fail_load"  # manifest validation["simulate"]: activation fails


class SimulatedInstaller:
    """An in-memory store and runtime. A bundle whose manifest has
    ``validation = {"simulate": "fail_health"}`` (or ``"fail_load"``) fails on every device,
    so tests and benchmarks can release a bad version that is still validly signed.

    Args:
        fail: extra ``(name, version) -> bool`` deciding a health-check failure.
    """

    def __init__(self, fail: Callable[[str, int], bool] | None = None) -> None:
        self._fail = fail
        self._lock = threading.Lock()
        self.installed: dict[str, dict[int, Manifest]] = {}
        self.active: dict[str, int] = {}
        self.splits: dict[str, tuple[int, int, int]] = {}

    def active_version(self, name: str) -> int | None:
        """The serving version of ``name``, or None."""
        return self.active.get(name)

    def installed_versions(self, name: str) -> list[int]:
        """Versions of ``name`` in the store, ascending."""
        return sorted(self.installed.get(name, {}))

    def install(self, bundle_dir: Path) -> None:
        """Add a verified bundle directory to the store, not active."""
        manifest = read_bundle(bundle_dir).manifest
        with self._lock:
            self.installed.setdefault(manifest.name, {})[manifest.version] = manifest

    def _manifest(self, name: str, version: int) -> Manifest:
        found = self.installed.get(name, {}).get(version)
        if found is None:
            raise NotFoundError(f"model {name!r} version {version} is not installed")
        return found

    def activate(self, name: str, version: int) -> None:
        """Hot-swap to ``version``; on failure the previous version keeps serving."""
        if self._manifest(name, version).validation.get("simulate") == FAIL_LOAD:
            raise ModelError(f"{name} v{version}: simulated load failure")
        self.active[name] = version

    def health_check(self, name: str, version: int) -> None:
        """Run the version's sample inputs; raise ModelError when they fail."""
        manifest = self._manifest(name, version)
        if manifest.validation.get("simulate") == FAIL_HEALTH or (
            self._fail is not None and self._fail(name, version)
        ):
            raise ModelError(f"{name} v{version}: simulated health check failure")

    def set_split(self, name: str, a: int, b: int, weight_b: int, label: str | None = None) -> None:
        """Send ``weight_b`` percent of ``name``'s requests to ``b`` (no telemetry here)."""
        self.splits[name] = (a, b, weight_b)

    def clear_split(self, name: str) -> None:
        """Remove the A/B split of ``name``."""
        self.splits.pop(name, None)

    def current_split(self, name: str) -> tuple[int, int, int] | None:
        """``(a, b, weight_b percent)`` of ``name``'s split, or None."""
        return self.splits.get(name)

    def prune(self, name: str, keep: set[int]) -> list[int]:
        """Remove versions not in ``keep``, the active one or in use; return them."""
        with self._lock:
            versions = self.installed.get(name, {})
            removed = [v for v in versions if v not in keep and v != self.active.get(name)]
            for v in removed:
                del versions[v]
        return removed


@dataclass(frozen=True)
class SimulatedDevice:
    """One simulated device's identity."""

    device: str
    password: str = ""
    username: str = ""


class SimulatedFleet:
    """N devices in this process, each a real :class:`DeviceSync` with a
    :class:`SimulatedInstaller`.

    Args:
        devices: identities (username defaults to the device id).
        state_root: each device gets ``state_root/<device>/``.
        fleet_settings: the common ``[fleet]`` keys (``broker``, ``fleet``, ``trust_anchor``,
            ``keyring``, ...); ``device``/``username``/``password`` are filled in per device.
        workers: install threads shared by all devices.
    """

    def __init__(
        self,
        devices: Sequence[SimulatedDevice],
        state_root: Path,
        fleet_settings: Mapping[str, Any],
        *,
        workers: int = 8,
        installer: Callable[[str], SimulatedInstaller] = lambda _device: SimulatedInstaller(),
    ) -> None:
        self.loop = MqttLoop("fleet-sim-mqtt")
        self.http = httpx.Client(
            follow_redirects=True,
            limits=httpx.Limits(max_connections=workers * 2, max_keepalive_connections=workers),
        )
        self.executor = ThreadPoolExecutor(workers, "fleet-sim")
        self.devices: dict[str, DeviceSync] = {}
        self.installers: dict[str, SimulatedInstaller] = {}
        for ident in devices:
            settings = dict(fleet_settings)
            settings.update(
                device=ident.device,
                username=ident.username or ident.device,
                password=ident.password,
            )
            inst = installer(ident.device)
            self.installers[ident.device] = inst
            self.devices[ident.device] = DeviceSync(
                SyncConfig.from_mapping(settings),
                inst,
                state_root / ident.device,
                http=self.http,
                loop=self.loop,
                executor=self.executor,
            )

    def start(self) -> None:
        """Start every device (connections are made by the shared loop)."""
        for sync in self.devices.values():
            sync.start()

    def wait_connected(self, timeout_s: float = 60.0) -> None:
        """Block until every device is connected.

        Raises:
            TransportError: one did not connect in time.
        """
        for sync in self.devices.values():
            sync.mqtt.wait_connected(timeout_s)

    def active_versions(self, name: str) -> dict[str, int | None]:
        """Device -> active version of ``name``."""
        return {d: inst.active_version(name) for d, inst in self.installers.items()}

    def stop(self) -> None:
        """Stop every device, then the shared loop, pool and executor."""
        for sync in self.devices.values():
            sync.stop(timeout_s=2.0)
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.loop.close()
        self.http.close()
