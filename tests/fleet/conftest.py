"""Fleet fixtures: a real Mosquitto and a real fleet server process, keys, signed releases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.broker import Mosquitto
from support.fleet import FleetServerProcess, make_keys


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
