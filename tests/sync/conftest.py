"""Fixtures for fleet sync tests: keys, an artifact server, a desired-state driver, devices."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from edgeserve.agent.sync.config import SyncConfig
from edgeserve.agent.sync.device import DeviceSync
from edgeserve.agent.sync.simulator import SimulatedInstaller
from support.artifact_server import ArtifactServer
from support.broker import Mosquitto
from support.fleet_keys import (
    FleetKeys,
    fleet_keys_fixture,  # noqa: F401  (fixture "fleet_keys")
    make_signed_bundle,
)
from support.fleet_sync import FLEET, FleetDriver, Release

from edgeserve.bundle import read_bundle


@pytest.fixture
def artifacts() -> Iterator[ArtifactServer]:
    """A real HTTP artifact server on 127.0.0.1 (Range, fault injection)."""
    server = ArtifactServer().start()
    yield server
    server.stop()


@pytest.fixture
def driver(mosquitto: Mosquitto, fleet_keys: FleetKeys) -> Iterator[FleetDriver]:
    """Publishes signed desired state and collects reports over the real broker."""
    d = FleetDriver(mosquitto.url, fleet_keys)
    yield d
    d.close()


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, fleet_keys: FleetKeys) -> dict[str, Path]:
    """Signed bundles of model "linear": v1, v2, v3, a v4 failing its health check in
    simulation, and a v2 signed by the fleet key (wrong signer)."""
    root = tmp_path_factory.mktemp("bundles")
    rel = [fleet_keys.release]
    return {
        "v1": make_signed_bundle(root / "v1", rel, version=1, seed=1).path,
        "v2": make_signed_bundle(root / "v2", rel, version=2, seed=2).path,
        "v3": make_signed_bundle(root / "v3", rel, version=3, seed=3).path,
        "v4-bad": make_signed_bundle(
            root / "v4", rel, version=4, seed=4, validation={"simulate": "fail_health"}
        ).path,
        "v2-wrong-signer": make_signed_bundle(
            root / "v2w", [fleet_keys.fleet], version=2, seed=2
        ).path,
    }


@pytest.fixture
def releases(
    bundles: dict[str, Path], artifacts: ArtifactServer, tmp_path: Path
) -> dict[str, Release]:
    """The session bundles packed and served by this test's artifact server."""
    out = {}
    for key, path in bundles.items():
        work = tmp_path / "tars"
        work.mkdir(exist_ok=True)
        out[key] = Release(read_bundle(path), artifacts, work, key)
    return out


@pytest.fixture
def make_device(
    mosquitto: Mosquitto, fleet_keys: FleetKeys, tmp_path: Path
) -> Iterator[Callable[..., tuple[DeviceSync, SimulatedInstaller]]]:
    """Factory: a real DeviceSync (own paho thread) with the stand-in installer."""
    started: list[DeviceSync] = []

    def make(
        device: str = "dev1",
        installer: SimulatedInstaller | None = None,
        telemetry: Any = None,
        **settings: Any,
    ) -> tuple[DeviceSync, SimulatedInstaller]:
        table = {
            "broker": mosquitto.url,
            "fleet": FLEET,
            "device": device,
            "trust_anchor": str(fleet_keys.anchor_path),
            "keyring": str(fleet_keys.keyring_path),
            "retry_backoff_s": 0.2,
            "download_timeout_s": 5,
        }
        table.update(settings)
        inst = installer or SimulatedInstaller()
        sync = DeviceSync(
            SyncConfig.from_mapping(table),
            inst,
            tmp_path / "state" / device,
            telemetry=telemetry,
        )
        sync.start()
        sync.mqtt.wait_connected()
        started.append(sync)
        return sync, inst

    yield make
    for sync in started:
        sync.stop(timeout_s=5)
