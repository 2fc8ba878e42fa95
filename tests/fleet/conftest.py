"""Fleet fixtures: a real Mosquitto and a real fleet server process, keys, signed releases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from edgeserve.fleet_server.releases import prepare_release
from support.broker import Mosquitto
from support.fleet import FleetServerProcess, make_keys
from support.models import make_linear_bundle

from edgeserve.trust import SigningKey


@pytest.fixture(scope="session")
def fleet_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One set of root/release/fleet keys for the session."""
    return make_keys(tmp_path_factory.mktemp("fleet-keys"))


@pytest.fixture
def fleet_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous Mosquitto for one test."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def fleet_server(
    tmp_path: Path, fleet_broker: Mosquitto, fleet_keys: Path
) -> Iterator[FleetServerProcess]:
    """A fleet server process on the test's broker."""
    server = FleetServerProcess(tmp_path / "server", fleet_broker.url, keys=fleet_keys).start()
    yield server
    server.stop()


def signed_release_tar(
    tmp: Path,
    keys: Path,
    *,
    name: str = "digits",
    version: int = 1,
    seed: int = 0,
    key: str = "release.key",
) -> Path:
    """A bundle of the linear model, signed with ``keys/<key>`` and packed as a tar."""
    bundle = make_linear_bundle(
        tmp / f"{name}-{version}-{seed}", name=name, version=version, seed=seed
    )
    out = tmp / f"tars-{name}-{version}-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    return prepare_release(bundle.path, SigningKey.load(keys / key), out)
