"""The paho adapter against a real Mosquitto: pub/sub, retained, PUBACK, reconnect, auth,
and many clients on one shared loop."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.broker import Mosquitto

from edgeserve.errors import ConfigError, TransportError
from edgeserve.mqtt import MqttClient, MqttConfig, MqttLoop, parse_broker_url


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()

    def __call__(self, topic: str, payload: bytes, retained: bool) -> None:
        with self.cond:
            self.items.append((topic, payload, retained))
            self.cond.notify_all()

    def wait(
        self, pred: Callable[[list[tuple[str, bytes, bool]]], bool], timeout: float = 10
    ) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.items), timeout), self.items


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def shared_loop() -> Iterator[MqttLoop]:
    loop = MqttLoop()
    yield loop
    loop.close()


def _client(broker: Mosquitto, cid: str, loop: MqttLoop | None = None, **kw: object) -> MqttClient:
    client = MqttClient(MqttConfig(broker.url, cid, **kw), loop=loop)  # type: ignore[arg-type]
    client.start()
    return client


def test_sync_broker_url_parsing() -> None:
    assert parse_broker_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884)
    assert parse_broker_url("mqtt://localhost") == ("localhost", 1883)
    with pytest.raises(ConfigError):
        parse_broker_url("http://x:1")


@pytest.mark.parametrize("driver", ["thread", "shared"])
def test_sync_mqtt_publish_subscribe_retained_and_puback(
    mosquitto: Mosquitto, shared_loop: MqttLoop, driver: str
) -> None:
    loop = shared_loop if driver == "shared" else None
    sub, pub = _client(mosquitto, "sub", loop), _client(mosquitto, "pub", loop)
    try:
        inbox = Inbox()
        sub.subscribe("es/t/#", inbox)
        sub.wait_connected()
        pub.wait_connected()
        time.sleep(0.2)  # SUBACK
        acked = threading.Event()
        pub.publish("es/t/a", b"hello", retain=True, on_ack=acked.set)
        assert acked.wait(5)
        inbox.wait(lambda items: ("es/t/a", b"hello", False) in items)
        late, late_inbox = _client(mosquitto, "late", loop), Inbox()
        late.subscribe("es/t/a", late_inbox)
        late_inbox.wait(lambda items: ("es/t/a", b"hello", True) in items)
        late.stop()
    finally:
        sub.stop()
        pub.stop()


@pytest.mark.parametrize("driver", ["thread", "shared"])
def test_sync_mqtt_reconnects_resubscribes_and_resends_after_broker_restart(
    mosquitto: Mosquitto, shared_loop: MqttLoop, driver: str
) -> None:
    loop = shared_loop if driver == "shared" else None
    sub, pub = _client(mosquitto, "sub", loop), _client(mosquitto, "pub", loop)
    try:
        inbox = Inbox()
        sub.subscribe("es/r", inbox)
        sub.wait_connected()
        pub.wait_connected()
        mosquitto.stop()
        _wait(lambda: not pub.connected and not sub.connected)
        acked = threading.Event()
        # paho keeps QoS 1 messages while offline; retained so the order of reconnects is moot
        pub.publish("es/r", b"queued while offline", retain=True, on_ack=acked.set)
        mosquitto.start()
        sub.wait_connected(15)
        pub.wait_connected(15)
        assert acked.wait(10)
        inbox.wait(lambda items: any(p == b"queued while offline" for _, p, _ in items))
        assert sub.connects >= 2
    finally:
        sub.stop()
        pub.stop()


def test_sync_mqtt_bad_credentials_raise_transport_error(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(pw), "dev1", "right"], check=True, capture_output=True
    )
    broker = Mosquitto(tmp_path / "b", password_file=pw).start()
    try:
        bad = _client(broker, "dev1", username="dev1", password="wrong")
        with pytest.raises(TransportError, match=r"[Nn]ot authori[sz]ed"):
            bad.wait_connected(3)
        bad.stop()
        good = _client(broker, "dev1", username="dev1", password="right")
        good.wait_connected(5)
        good.stop()
    finally:
        broker.stop()


def test_sync_mqtt_shared_loop_drives_many_clients(
    mosquitto: Mosquitto, shared_loop: MqttLoop
) -> None:
    n = 60
    inboxes = [Inbox() for _ in range(n)]
    clients = [_client(mosquitto, f"d{i}", shared_loop) for i in range(n)]
    for i, (c, box) in enumerate(zip(clients, inboxes, strict=True)):
        c.subscribe(f"es/f/dev/d{i}/desired", box)
    server = _client(mosquitto, "server")
    try:
        for c in clients:
            c.wait_connected(10)
        server.wait_connected()
        time.sleep(0.3)
        for i in range(n):
            server.publish(f"es/f/dev/d{i}/desired", f"v{i}".encode(), retain=True)
        for i, box in enumerate(inboxes):
            box.wait(lambda items, i=i: any(p == f"v{i}".encode() for _, p, _ in items))
        assert threading.active_count() < 20  # one loop thread, not one per client
    finally:
        for c in clients:
            c.stop(1)
        server.stop()


def test_sync_mqtt_shared_subscription_dispatches_by_plain_filter(mosquitto: Mosquitto) -> None:
    a, b, pub = (_client(mosquitto, cid) for cid in ("srv-a", "srv-b", "dev"))
    try:
        box_a, box_b = Inbox(), Inbox()
        a.subscribe("$share/servers/es/f/dev/+/reported", box_a)
        b.subscribe("$share/servers/es/f/dev/+/reported", box_b)
        for c in (a, b, pub):
            c.wait_connected()
        time.sleep(0.3)
        for i in range(20):
            pub.publish(f"es/f/dev/d{i}/reported", b"x")
        _wait(lambda: len(box_a.items) + len(box_b.items) == 20)
        time.sleep(0.2)
        assert len(box_a.items) + len(box_b.items) == 20  # each message to one member only
    finally:
        for c in (a, b, pub):
            c.stop()


def test_sync_mqtt_tls_with_client_certificate_identity(tmp_path: Path) -> None:
    """mqtts:// with a client certificate whose CN is the device id (Mosquitto
    ``use_identity_as_username``; identity by username/password or client cert)."""
    import os

    from support.broker import free_port, mosquitto_binary, wait_for_port
    from support.fleet_tls import make_tls_files

    tls = make_tls_files(tmp_path, client_cn="dev-tls")
    (tmp_path / "acl").write_text("pattern readwrite es/lab/dev/%u/#\n")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                *(["user root"] if os.geteuid() == 0 else []),
                f"cafile {tls['ca']}",
                f"certfile {tls['server']}",
                f"keyfile {tls['server_key']}",
                "require_certificate true",
                "use_identity_as_username true",
                f"acl_file {tmp_path / 'acl'}",
                f"log_dest file {tmp_path / 'mosquitto.log'}",
            ]
        )
        + "\n"
    )
    proc = subprocess.Popen(
        [mosquitto_binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        url = f"mqtts://127.0.0.1:{port}"
        good = MqttClient(
            MqttConfig(
                url,
                "dev-tls",
                tls_ca=str(tls["ca"]),
                tls_cert=str(tls["client"]),
                tls_key=str(tls["client_key"]),
            )
        )
        inbox = Inbox()
        good.subscribe("es/lab/dev/dev-tls/desired", inbox)
        good.start()
        good.wait_connected(10)
        time.sleep(0.2)
        acked = threading.Event()
        good.publish("es/lab/dev/dev-tls/desired", b"hi", on_ack=acked.set)
        assert acked.wait(5)
        inbox.wait(lambda items: any(p == b"hi" for _, p, _ in items))
        good.stop()
        no_cert = MqttClient(MqttConfig(url, "anon", tls_ca=str(tls["ca"])))
        no_cert.start()
        with pytest.raises(TransportError):
            no_cert.wait_connected(2)
        no_cert.stop()
    finally:
        proc.terminate()
        proc.wait(10)
