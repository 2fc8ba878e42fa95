"""Fleet fixtures: a real Mosquitto, a real PostgreSQL, a real fleet server process, keys."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.broker import Mosquitto
from support.fleet import FleetServerProcess, Postgres, make_keys, postgres_bin


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


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory users ``mosquitto`` and ``postgres`` can reach (pytest's are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="edgeserve-fleet-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server for the module (the same SQL runs on SQLite and PostgreSQL)."""
    if postgres_bin() is None:
        # scripts/test installs it; a missing server must not pass silently as a skip
        pytest.fail(
            "PostgreSQL server not installed: run scripts/test (apt-get install postgresql)"
        )
    import psycopg  # noqa: F401  (in the `postgres` extra, part of `all`)

    server = Postgres(Path(tempfile.mkdtemp(prefix="edgeserve-pg-"))).start()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each engine in turn: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.create_database(f"t{uuid.uuid4().hex[:12]}")
