"""Two fleet-server replicas on one PostgreSQL, as the README's "Going past one machine" runs
them: their own client ids and broker users, one ``share_group``, one artifacts directory, and
Debian's Mosquitto started as root with the files ``edgeserve fleet broker-config`` writes
(it drops to user ``mosquitto``). Simulated devices run the real device sync with their own
credentials.

A staged rollout converges; each report is handled by exactly one replica and both handle
some; one replica runs the controller; SIGKILL on it mid-rollout hands the controller to the
other, the rollout completes and the store holds every device's last report.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from edgeserve.agent.sync.simulator import SimulatedDevice, SimulatedFleet
from edgeserve.fleet_server.broker.files import write_mosquitto_files
from edgeserve.fleet_server.store import Store
from edgeserve.fleet_server.store.db import open_database
from support.broker import Mosquitto, free_port
from support.fleet import (
    FleetServerProcess,
    Postgres,
    device_settings,
    register_devices,
    signed_tar,
    wait_for,
)

pytestmark = pytest.mark.slow
N = 16
NAMES = ("replica-a", "replica-b")


def metric(server: FleetServerProcess, name: str, **labels: str) -> float:
    """One sample of a replica's /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.fixture
def replicas(
    tmp_path: Path, reachable_dir: Path, postgres: Postgres, fleet_keys: Path
) -> Iterator[list[FleetServerProcess]]:
    """Two replicas on one new database, started together (the broker is not up yet)."""
    database = postgres.create_database(f"r{uuid.uuid4().hex[:12]}")
    url = f"mqtt://127.0.0.1:{free_port()}"
    servers = [
        FleetServerProcess(
            tmp_path / name,
            url,
            keys=fleet_keys,
            database=database,
            broker_auth=True,
            data_dir=str(reachable_dir / "data"),  # shared: the artifacts both serve
            client_id=name,
            share_group="fleet",
            broker_user=name,
            broker_password=f"{name}-password-0123456789",
        )
        for name in NAMES
    ]
    errors: list[BaseException] = []

    def start(server: FleetServerProcess) -> None:
        try:
            server.start(timeout_s=60)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield servers
    finally:
        for s in servers:
            s.stop()


def test_two_replicas_share_the_load_and_the_controller_fails_over(
    replicas: list[FleetServerProcess], reachable_dir: Path, postgres: Postgres, tmp_path: Path
) -> None:
    a, b = replicas
    creds = register_devices(a, [f"d{i:02d}" for i in range(N)], {"hw": "x"})
    with b.client() as client:  # the other replica writes the broker files: one database
        files = client.broker_config()
    for name in NAMES:  # every replica's own account, with the server's rights
        assert f"\n{name}:$7$" in f"\n{files['passwords']}"
        assert f"user {name}\ntopic readwrite es/test/#" in files["acl"]
    written = write_mosquitto_files(
        reachable_dir / "broker", files["passwords"], files["acl"], files["url"]
    )
    port = int(files["url"].rsplit(":", 1)[1])
    broker = Mosquitto(reachable_dir / "broker", port=port, config_file=written.config).start()
    fleet: SimulatedFleet | None = None
    try:
        for server in replicas:
            with server.client() as client:
                wait_for(lambda: client.stats()["mqtt_connected"], 30, "replica connected")
        leaders = wait_for(
            lambda: (
                (v := [metric(s, "edgeserve_fleet_controller_leader") for s in replicas])
                and sum(v) == 1
                and v
            ),
            30,
            "exactly one controller",
        )
        leader, survivor = (a, b) if leaders[0] == 1 else (b, a)
        assert survivor.keys is not None
        with survivor.client() as client:
            client.upload_release(signed_tar(tmp_path / "rel", survivor.keys, version=1))
        fleet = SimulatedFleet(
            [SimulatedDevice(d, p) for d, p in creds],
            tmp_path / "devices",
            device_settings(survivor, broker.url),
            workers=4,
        )
        fleet.start()
        fleet.wait_connected(30)
        with survivor.client() as client:
            rid = client.start_rollout(
                {"model": "digits", "version": 1, "phases": [25, 100], "soak": "3s"}
            )
            first = wait_for(
                lambda: (
                    (st := client.rollout(rid))["counts"]["active"] >= 1
                    and st["counts"]["installing"] == 0
                    and st
                ),
                30,
                "first phase settled",
            )
        assert first["phase_percent"] == 25 and first["counts"]["pending"] > 0

        def sent() -> int:
            assert fleet is not None
            return sum(s.stats["published_reported"] for s in fleet.devices.values())

        def handled() -> list[float]:
            return [
                metric(s, "edgeserve_fleet_mqtt_received_total", kind="reported") for s in replicas
            ]

        # each report went to exactly one replica, and each replica took a share
        split = wait_for(lambda: sum(h := handled()) == sent() and h, 20, "reports handled")
        assert all(n > 0 for n in split), split
        for server in replicas:  # devices registered through the other replica are known too
            with server.client() as client:
                assert client.stats()["ingest"]["dropped_total"] == 0
        assert metric(leader, "edgeserve_fleet_controller_leader") == 1
        assert metric(survivor, "edgeserve_fleet_controller_leader") == 0

        leader.stop(kill=True)  # SIGKILL during the first phase's soak
        wait_for(
            lambda: metric(survivor, "edgeserve_fleet_controller_leader") == 1,
            20,
            "the other replica taking over the controller",
        )
        with survivor.client() as client:
            done = wait_for(
                lambda: (st := client.rollout(rid))["status"] == "completed" and st,
                40,
                "rollout completed",
            )
        assert done["counts"]["active"] == N and done["counts"]["failed"] == 0
        assert set(fleet.active_versions("digits").values()) == {1}

        # the store has each device's last report: for the latest desired seq, ACTIVE
        store = Store(open_database(survivor.database))
        try:

            def last_reports() -> list[tuple[str, int, object, object]]:
                return [
                    (d.id, d.desired_seq, d.reported.get("seq"), _state(d.reported))
                    for d in store.devices()
                ]

            rows = wait_for(
                lambda: (
                    (r := last_reports())
                    and all(seq == rep and st == ("ACTIVE", 1) for _d, seq, rep, st in r)
                    and r
                ),
                20,
                "every device's last report stored",
            )
        finally:
            store.close()
        assert len(rows) == N
    finally:
        if fleet is not None:
            fleet.stop()
        broker.stop()


def _state(reported: dict[str, object]) -> tuple[object, object] | None:
    models = reported.get("models")
    status = models.get("digits") if isinstance(models, dict) else None
    return (status.get("state"), status.get("active")) if isinstance(status, dict) else None
