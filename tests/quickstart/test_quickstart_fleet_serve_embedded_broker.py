"""`edgeserve fleet serve --embedded-broker`: the one-machine setup runs the broker in-process
(Mosquitto when installed, else amqtt), with the fleet server's own credentials only, and stops
it with the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from support.broker import free_port, wait_for_port
from support.quickstart import processes_mentioning

EDGESERVE = [sys.executable, "-c", "from edgeserve.cli import main; main()"]


def connect_rc(port: int, user: str, password: str) -> mqtt.ReasonCode:
    """CONNACK reason for a CONNECT with these credentials."""
    import threading

    got: list[mqtt.ReasonCode] = []
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user)
    client.username_pw_set(user, password)

    def on_connect(_c: object, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object) -> None:
        got.append(rc)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


@pytest.mark.slow
def test_quickstart_fleet_serve_embedded_broker(tmp_path: Path) -> None:
    subprocess.run(
        [*EDGESERVE, "keys", "init", "--out", str(tmp_path / "keys")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    broker_port, http_port = free_port(), free_port()
    (tmp_path / "fleet.toml").write_text(
        f'[server]\nport = {http_port}\ntoken = "0123456789abcdef0123"\ndata_dir = "data"\n'
        f'[broker]\nurl = "mqtt://127.0.0.1:{broker_port}"\npassword = "server-pw"\n'
        '[keys]\nfleet_key = "keys/fleet.key"\nkeyring = "keys/keyring.json"\n'
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*EDGESERVE, "fleet", "serve", "--config", "fleet.toml", "--embedded-broker"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        wait_for_port(broker_port, timeout_s=30)
        wait_for_port(http_port, timeout_s=30)
        assert not connect_rc(broker_port, "fleet-server", "server-pw").is_failure
        assert connect_rc(broker_port, "fleet-server", "wrong").is_failure
        assert connect_rc(broker_port, "someone", "else").is_failure
        # a device registered while the server runs can log in at once: the server rewrites
        # the password file and ACL and the embedded broker re-reads them (no restart)
        added = subprocess.run(
            [*EDGESERVE, "fleet", "device", "add", "dev-late", "--json"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        creds = json.loads(added.stdout)
        assert not connect_rc(broker_port, creds["username"], creds["password"]).is_failure
        assert connect_rc(broker_port, creds["username"], "not-its-password").is_failure
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    assert processes_mentioning(str(tmp_path)) == [], (tmp_path / "serve.log").read_text()
