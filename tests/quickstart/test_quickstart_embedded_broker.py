"""The embedded broker (Mosquitto when installed, else amqtt) carries what fleet sync needs:
retained QoS 1 desired state, password authentication and Mosquitto-style ACLs, with a real
paho-mqtt client on loopback, for both implementations."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from edgeserve.fleet_server.broker.acl import acl_allows, parse_acl
from edgeserve.fleet_server.broker.embedded import (
    EmbeddedBroker,
    mosquitto_binary,
    start_embedded_broker,
)
from edgeserve.fleet_server.broker.passwords import hash_password, verify_password

from edgeserve.errors import ConfigError

KINDS = [
    pytest.param(
        "mosquitto",
        marks=pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
    ),
    "amqtt",
]
ACL = """\
# the fleet server may do anything under es/
user fleet
topic readwrite es/#
# each device: its own desired state (read), its own reports (write)
pattern read es/f1/dev/%u/desired
pattern write es/f1/dev/%u/reported
"""


class Client:
    """A paho client (callback API v2) that queues what it receives."""

    def __init__(self, broker: EmbeddedBroker, user: str | None = None, pw: str | None = None):
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subacks: queue.Queue[list[mqtt.ReasonCode]] = queue.Queue()
        self.connected = threading.Event()
        self.rc: mqtt.ReasonCode | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user or "")
        if user is not None:
            self.client.username_pw_set(user, pw)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(codes)
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object):
        self.rc = rc
        self.connected.set()

    def wait_connected(self) -> mqtt.ReasonCode:
        assert self.connected.wait(10), "no CONNACK"
        assert self.rc is not None
        return self.rc

    def subscribe(self, topic: str) -> mqtt.ReasonCode:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=10)[0]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("kind", KINDS)
def test_quickstart_embedded_broker_retained_qos1(kind: str) -> None:
    with start_embedded_broker(kind=kind) as broker:  # type: ignore[arg-type]
        assert broker.kind == kind
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        pub = Client(broker)
        assert not pub.wait_connected().is_failure
        pub.publish("es/f1/dev/d1/desired", b'{"seq": 1}', retain=True)
        pub.close()
        # a subscriber that arrives later gets the retained message, at QoS 1
        sub = Client(broker)
        sub.wait_connected()
        assert not sub.subscribe("es/f1/dev/+/desired").is_failure
        msg = sub.messages.get(timeout=10)
        assert (msg.topic, msg.payload, msg.retain, msg.qos) == (
            "es/f1/dev/d1/desired",
            b'{"seq": 1}',
            True,
            1,
        )
        # and live QoS 1 messages after that
        live = Client(broker)
        live.wait_connected()
        live.publish("es/f1/dev/d1/desired", b'{"seq": 2}')
        assert sub.messages.get(timeout=10).payload == b'{"seq": 2}'
        sub.close()
        live.close()
    # stopped: nothing listens any more
    with pytest.raises(OSError):
        Client(broker)


@pytest.mark.parametrize("kind", KINDS)
def test_quickstart_embedded_broker_passwords_and_acl(kind: str, tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    users = {"fleet": "fleet-pw", "d1": "d1-pw", "d2": "d2-pw"}
    with start_embedded_broker(users=users, acl_file=acl, kind=kind) as broker:  # type: ignore[arg-type]
        bad = Client(broker, "d1", "wrong")
        assert bad.wait_connected().is_failure
        bad.close()

        fleet, d1, d2 = (Client(broker, u, users[u]) for u in ("fleet", "d1", "d2"))
        for c in (fleet, d1, d2):
            assert not c.wait_connected().is_failure
        assert not d1.subscribe("es/f1/dev/d1/desired").is_failure
        # d2 may not read d1's desired state: amqtt refuses the SUBSCRIBE, Mosquitto 2.0 grants
        # it but never delivers (acl_file "read" is checked per message); either way, nothing
        d2.subscribe("es/f1/dev/d1/desired")
        fleet.publish("es/f1/dev/d1/desired", b"for-d1", retain=True)
        assert d1.messages.get(timeout=10).payload == b"for-d1"
        with pytest.raises(queue.Empty):
            d2.messages.get(timeout=0.5)

        assert not fleet.subscribe("es/f1/dev/+/reported").is_failure
        d2.publish("es/f1/dev/d1/reported", b"forged")  # not d2's topic: dropped by the broker
        d1.publish("es/f1/dev/d1/reported", b"genuine")
        assert fleet.messages.get(timeout=10).payload == b"genuine"
        with pytest.raises(queue.Empty):
            fleet.messages.get(timeout=0.5)
        for c in (fleet, d1, d2):
            c.close()


def test_quickstart_embedded_broker_password_hash_matches_mosquitto_format() -> None:
    encoded = hash_password("s3cret", salt=b"0123456789ab")
    assert encoded.startswith("$7$101$")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cre", encoded)
    assert not verify_password("s3cret", "$7$101$not-base64!$x")
    assert not verify_password("s3cret", "plain")


def test_quickstart_embedded_broker_acl_rules() -> None:
    rules = parse_acl(ACL)
    kw = {"client_id": "c"}
    assert acl_allows(rules, user="d1", topic="es/f1/dev/d1/desired", write=False, **kw)
    assert not acl_allows(rules, user="d1", topic="es/f1/dev/d1/desired", write=True, **kw)
    assert not acl_allows(rules, user="d1", topic="es/f1/dev/d2/desired", write=False, **kw)
    assert not acl_allows(rules, user=None, topic="es/f1/dev/d1/desired", write=False, **kw)
    # a wildcard subscription is allowed only when the ACL covers all of it
    assert not acl_allows(
        rules, user="d1", topic="es/f1/dev/+/desired", write=False, subscribe=True, **kw
    )
    assert acl_allows(rules, user="fleet", topic="es/f1/#", write=False, subscribe=True, **kw)
    with pytest.raises(ConfigError, match="line 1"):
        parse_acl("allow everything\n")


def test_quickstart_embedded_broker_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="either users or password_file"):
        start_embedded_broker(users={"a": "b"}, password_file=tmp_path / "p")
    with pytest.raises(ConfigError, match="does not exist"):
        start_embedded_broker(acl_file=tmp_path / "missing-acl")


@pytest.mark.parametrize("kind", KINDS)
def test_quickstart_embedded_broker_with_edgeserve_mqtt_adapter(kind: str) -> None:
    """The project's own paho adapter (what agents and the fleet server use) works with it,
    including the Last Will and a retained desired state received on subscribe."""
    from edgeserve.mqtt import MqttClient, MqttConfig, Will

    got: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
    stored = threading.Event()
    with start_embedded_broker(kind=kind) as broker:  # type: ignore[arg-type]
        server = MqttClient(MqttConfig(broker.url, "fleet-server"))
        device = MqttClient(
            MqttConfig(broker.url, "d1", will=Will("es/f1/dev/d1/presence", b"offline"))
        )
        try:
            server.start()
            server.wait_connected()
            server.publish("es/f1/dev/d1/desired", b"v2", qos=1, retain=True, on_ack=stored.set)
            # the broker holds it (PUBACK) before the device subscribes, so it arrives as a
            # retained message, not as a live one
            assert stored.wait(10)
            device.subscribe("es/f1/dev/d1/desired", lambda t, p, r: got.put((t, p, r)))
            device.start()
            device.wait_connected()
            assert got.get(timeout=10) == ("es/f1/dev/d1/desired", b"v2", True)
        finally:
            device.stop()
            server.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_quickstart_embedded_broker_reload_picks_up_new_devices(kind: str, tmp_path: Path) -> None:
    """After `fleet device add` rewrites the password file and ACL, reload() lets the new
    device in without restarting the broker (retained messages stay)."""
    from edgeserve.fleet_server.broker.passwords import write_password_file

    acl = tmp_path / "acl"
    acl.write_text(ACL)
    passwd = write_password_file(tmp_path / "passwd", {"fleet": "fleet-pw"})
    with start_embedded_broker(password_file=passwd, acl_file=acl, kind=kind) as broker:  # type: ignore[arg-type]
        fleet = Client(broker, "fleet", "fleet-pw")
        assert not fleet.wait_connected().is_failure
        fleet.publish("es/f1/dev/d9/desired", b"for-d9", retain=True)
        early = Client(broker, "d9", "d9-pw")
        assert early.wait_connected().is_failure  # not registered yet
        early.close()

        write_password_file(passwd, {"fleet": "fleet-pw", "d9": "d9-pw"})
        broker.reload()
        deadline = time.monotonic() + 10
        while True:  # SIGHUP is asynchronous: retry the CONNECT until it is accepted
            d9 = Client(broker, "d9", "d9-pw")
            if not d9.wait_connected().is_failure:
                break
            d9.close()
            assert time.monotonic() < deadline, "d9 still refused after reload()"
            time.sleep(0.2)
        assert not d9.subscribe("es/f1/dev/d9/desired").is_failure
        assert d9.messages.get(timeout=10).payload == b"for-d9"
        d9.close()
        fleet.close()
