"""The broker files `edgeserve fleet broker-config` writes, read by Debian's Mosquitto started as
root the way its package starts it (no ``user root``: it drops to user ``mosquitto`` before it
opens them), and the client-id rule on it and on the embedded brokers: one device's credentials
with another device's client id cannot disconnect that device.

The clients are paho-mqtt, used directly (not our adapter).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from edgeserve.fleet_server.broker.embedded import EmbeddedBroker, start_embedded_broker
from edgeserve.fleet_server.broker.files import write_broker_files
from edgeserve.fleet_server.broker.passwords import hash_password
from support.broker import free_port, mosquitto_binary, wait_for_port

pytestmark = pytest.mark.slow

DEVICES = {"dev-a": "pw-a-0123456789", "dev-b": "pw-b-0123456789"}
SERVER = ("fleet-server", "server-pw-0123456789")


@dataclass
class Broker:
    port: int
    stop: object


def _files(out: Path, port: int):  # type: ignore[no-untyped-def]
    return write_broker_files(
        out,
        [(d, hash_password(p)) for d, p in DEVICES.items()],
        prefix="es",
        fleet="f1",
        server_user=SERVER[0],
        server_password=SERVER[1],
        url=f"mqtt://127.0.0.1:{port}",
    )


@pytest.fixture(params=["packaged-mosquitto", "embedded-mosquitto", "embedded-amqtt"])
def broker(request: pytest.FixtureRequest, reachable_dir: Path) -> Iterator[int]:
    port = free_port()
    files = _files(reachable_dir / "broker", port)
    if request.param == "packaged-mosquitto":
        assert os.geteuid() == 0, "this test starts Mosquitto as root, as its package does"
        conf = files.config.read_text()
        assert "user root" not in conf
        proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(files.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, 15)
            uid = next(
                int(line.split()[1])
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if line.startswith("Uid:")
            )
            assert uid == pwd.getpwnam("mosquitto").pw_uid  # it dropped privileges
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        return
    kind = "mosquitto" if request.param == "embedded-mosquitto" else "amqtt"
    embedded: EmbeddedBroker = start_embedded_broker(
        "127.0.0.1",
        port,
        password_file=files.password_file,
        acl_file=files.acl_file,
        kind=kind,  # type: ignore[arg-type]
        workdir=reachable_dir / "run",
    )
    try:
        yield port
    finally:
        embedded.stop()


class Client:
    """A paho client that records CONNACKs, disconnects and messages."""

    def __init__(self, port: int, user: str, password: str, client_id: str) -> None:
        self.connacks: list[mqtt.ReasonCode] = []
        self.disconnects: list[str] = []
        self.messages: list[bytes] = []
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.got = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        c.username_pw_set(user, password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 1)
        self.c = c
        c.connect("127.0.0.1", port, keepalive=10)
        c.loop_start()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object):
        self.connacks.append(rc)
        self.answered.set()
        if not rc.is_failure:
            self.connected.set()

    def _on_disconnect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        self.disconnects.append(str(rc))
        self.connected.clear()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.append(bytes(msg.payload))
        self.got.set()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_another_devices_client_id_cannot_disconnect_it(broker: int) -> None:
    victim = Client(broker, "dev-b", DEVICES["dev-b"], "dev-b")
    attacker = None
    try:
        assert victim.connected.wait(10), victim.connacks
        victim.c.subscribe("es/f1/dev/dev-b/desired", qos=1)
        # dev-a's valid credentials, dev-b's client id: MQTT 3.1.1 section 3.1.4 would make the
        # broker drop dev-b's session; the client-id rule prevents it (Mosquitto renames the
        # client to its username, amqtt refuses the CONNECT)
        attacker = Client(broker, "dev-a", DEVICES["dev-a"], "dev-b")
        assert attacker.answered.wait(10)
        victim.got.wait(3)  # give a takeover time to happen
        assert victim.disconnects == [] and victim.connected.is_set()
        server = Client(broker, *SERVER, SERVER[0])
        try:
            assert server.connected.wait(10)
            server.c.publish("es/f1/dev/dev-b/desired", b"still-yours", qos=1)
            assert victim.got.wait(10), "dev-b no longer receives its desired state"
        finally:
            server.close()
        assert victim.messages == [b"still-yours"] and victim.disconnects == []
    finally:
        victim.close()
        if attacker is not None:
            attacker.close()
