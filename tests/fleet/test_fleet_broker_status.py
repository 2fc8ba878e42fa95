"""`fleet serve` tells the operator what is wrong with the broker: one line per outage naming
its cause, one on recovery, and ``/healthz`` says the same. Real Mosquitto, real server
process; the server retries on its own throughout (1 s doubling to 30 s)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from edgeserve.fleet_server.broker.files import write_broker_files
from support.broker import Mosquitto
from support.fleet import SERVER_PASSWORD, SERVER_USER, FleetServerProcess, wait_for

pytestmark = pytest.mark.slow


def broker_state(server: FleetServerProcess) -> str:
    return httpx.get(f"{server.url}/healthz", timeout=5).json()["broker"]["state"]


def lines(server: FleetServerProcess, text: str) -> list[str]:
    return [line for line in server.log_tail(10_000).splitlines() if text in line]


def test_broker_outages_are_named_once_and_recoveries_said(
    tmp_path: Path, fleet_keys: Path
) -> None:
    files = tmp_path / "broker-files"

    def write(server_password: str) -> None:
        write_broker_files(
            files,
            [],
            prefix="es",
            fleet="test",
            server_user=SERVER_USER,
            server_password=server_password,
        )

    write("not-the-servers-password")
    broker = Mosquitto(
        tmp_path / "mq", password_file=files / "passwords", acl_file=files / "acl"
    ).start()
    server = FleetServerProcess(
        tmp_path / "server", broker.url, keys=fleet_keys, broker_auth=True
    ).start()
    url = broker.url
    try:
        # wrong credentials: said once, however often the server retries
        wait_for(lambda: broker_state(server) == "not authorised", 30, "not authorised")
        wait_for(lambda: len(lines(server, "retrying")) >= 1, 10, "the outage line")
        refused = lines(server, f"broker {url}: not authorised (user {SERVER_USER}: ")
        assert len(refused) == 1, server.log_tail()
        # the operator fixes the password file and reloads Mosquitto (SIGHUP)
        write(SERVER_PASSWORD)
        assert broker.process is not None
        broker.process.send_signal(signal.SIGHUP)
        wait_for(lambda: broker_state(server) == "connected", 60, "connected again")
        assert len(lines(server, f"broker {url}: connected again as {SERVER_USER}")) == 1
        assert len(lines(server, "not authorised (user")) == 1  # still only the one line

        # the broker goes away: one line with the cause, then one when it is back
        broker.stop()
        wait_for(lambda: broker_state(server) == "refused", 30, "refused")
        health = httpx.get(f"{server.url}/healthz", timeout=5).json()
        assert health["mqtt_connected"] is False and "nothing listens" in health["broker"]["detail"]
        wait_for(lambda: lines(server, "connection lost"), 10, "the outage line")
        assert len(lines(server, "connection lost")) == 1
        assert (
            "refused (connection refused: nothing listens on" in lines(server, "connection lost")[0]
        )
        broker.start()
        wait_for(lambda: broker_state(server) == "connected", 60, "connected after restart")
        assert len(lines(server, "connected again")) == 2
        assert httpx.get(f"{server.url}/healthz", timeout=5).json()["broker"]["outages"] == 2
    finally:
        server.stop()
        broker.stop()
