"""The one adapter that owns paho-mqtt (``CallbackAPIVersion.VERSION2``), for the agent and the
fleet server alike. Everything else speaks :mod:`edgeserve.protocol` and this small client:

- connect with username/password and a Last Will, reconnect with exponential backoff
  (paho's ``reconnect_delay_set``), re-subscribe after every (re)connect because sessions are
  clean (MQTT 3.1.1 section 3.1.2.4: a clean session forgets subscriptions);
- ``subscribe(filter, callback)`` - callbacks get ``(topic, payload, retained)``; shared
  subscriptions (``$share/<group>/<filter>``) are dispatched by their plain filter;
- ``publish(topic, payload, qos=1, retain=..., on_ack=...)`` - QoS 1 messages published while
  offline are queued by paho and (re)sent on reconnect; ``on_ack`` fires on PUBACK
  (section 4.3.2), which is when a sender may forget a message;
- ``stop()`` - a clean DISCONNECT, so the broker discards the Will (section 3.1.2.5).

paho return codes become :class:`~edgeserve.errors.TransportError`. Two drivers:
by default each client runs paho's own network thread (``loop_start``); passing a shared
:class:`MqttLoop` runs many clients on one thread with ``selectors`` (paho's external-loop
callbacks, ``on_socket_open`` & co.), which is how a benchmark runs 1,000 devices in a process.
"""

from __future__ import annotations

import contextlib
import logging
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edgeserve.errors import ConfigError, TransportError

__all__ = [
    "NOT_AUTHORISED",
    "REFUSED",
    "UNREACHABLE",
    "MessageCallback",
    "MqttClient",
    "MqttConfig",
    "MqttLoop",
    "Will",
    "parse_broker_url",
    "uses_tls",
]

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes, bool], None]
# causes passed to ``on_connect_failed``: the TCP connection was refused, the broker refused
# the credentials (CONNACK), or the broker's host cannot be reached at all
REFUSED: Final = "refused"
NOT_AUTHORISED: Final = "not authorised"
UNREACHABLE: Final = "unreachable"
_DEFAULT_PORT: Final = 1883  # IANA "mqtt"
_DEFAULT_TLS_PORT: Final = 8883  # IANA "secure-mqtt"


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` (TLS) -> ``(host, port)``.

    Raises:
        ConfigError: another scheme or no host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
        raise ConfigError(f"broker url {url!r} must look like mqtt://host:port or mqtts://...")
    try:
        default = _DEFAULT_TLS_PORT if parts.scheme in ("mqtts", "ssl") else _DEFAULT_PORT
        port = parts.port or default
    except ValueError as exc:
        raise ConfigError(f"broker url {url!r}: bad port") from exc
    return parts.hostname, port


def uses_tls(url: str) -> bool:
    """True for ``mqtts://`` (and ``ssl://``) URLs."""
    return urlsplit(url).scheme in ("mqtts", "ssl")


@dataclass(frozen=True)
class Will:
    """The Last Will the broker publishes when the client vanishes without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class MqttConfig:
    """How to reach the broker.

    Attributes:
        url: ``mqtt://host:port``.
        client_id: MQTT client identifier (the device id for devices).
        username / password: credentials (Mosquitto ``password_file``).
        keepalive_s: MQTT keep alive (section 3.1.2.10); the Will fires ~1.5x after silence.
        will: optional Last Will.
        reconnect_min_s / reconnect_max_s: reconnect backoff bounds (doubling).
        max_queued_messages: QoS>0 messages paho keeps while offline (0 = unbounded).
        tls_ca: CA bundle that signs the broker's certificate (TLS when set or ``mqtts://``).
        tls_cert / tls_key: client certificate and key, for brokers that take the identity
            from the certificate (Mosquitto ``use_identity_as_username``).
    """

    url: str
    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    will: Will | None = None
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    max_queued_messages: int = 10_000
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        parse_broker_url(self.url)
        if not self.client_id or len(self.client_id) > 128:
            raise ConfigError("mqtt client_id must be 1-128 characters")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ConfigError("mqtt reconnect backoff: need 0 < min <= max")


def _check(rc: Any, what: str) -> None:
    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
        raise TransportError(f"mqtt {what}: {paho.error_string(rc)}")


class MqttClient:
    """A small MQTT client over paho. Thread-safe for publish/subscribe; callbacks run on the
    network thread and must not block (hand work to another thread)."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        loop: MqttLoop | None = None,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        on_connect_failed: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self._loop = loop
        self._user_on_connect = on_connect
        self._user_on_disconnect = on_disconnect
        self._user_on_connect_failed = on_connect_failed
        self._subs: dict[str, tuple[MessageCallback, int]] = {}
        self._acks: dict[int, Callable[[], None] | None] = {}
        self._early_acks: set[int] = set()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stopping = False
        self.last_error: str | None = None
        self.connects = 0
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.will is not None:
            w = config.will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        if uses_tls(config.url) or config.tls_ca or config.tls_cert:
            try:
                client.tls_set(
                    ca_certs=config.tls_ca, certfile=config.tls_cert, keyfile=config.tls_key
                )
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError(f"mqtt TLS settings: {exc}") from exc
        if loop is not None:
            client.connect_timeout = 2.0  # seconds: a slow connect stalls the shared loop
        client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        client.max_queued_messages_set(config.max_queued_messages)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client

    # ---------------------------------------------------------------- lifecycle

    @property
    def connected(self) -> bool:
        """True between CONNACK (accepted) and the next disconnect."""
        return self._connected.is_set()

    def start(self) -> None:
        """Start connecting in the background; reconnects until :meth:`stop`.

        Raises:
            TransportError: paho refused to start.
        """
        host, port = parse_broker_url(self.config.url)
        self._client.connect_async(host, port, keepalive=self.config.keepalive_s)
        if self._loop is None:
            _check(self._client.loop_start(), "loop_start")
        else:
            self._loop.add(self)

    def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Block until connected.

        Raises:
            TransportError: not connected within ``timeout_s`` (with the broker's reason).
        """
        if not self._connected.wait(timeout_s):
            why = self.last_error or "no answer"
            raise TransportError(f"mqtt: cannot connect to {self.config.url}: {why}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect cleanly (the broker drops the Will) and stop the network driver."""
        self._stopping = True
        try:
            self._client.disconnect()
        except Exception as exc:  # stopping must not fail on a dead socket
            log.debug("mqtt %s: disconnect: %s", self.config.client_id, exc)
        if self._loop is None:
            self._client.loop_stop()
        else:
            self._loop.remove(self, timeout_s)
        self._connected.clear()

    # ---------------------------------------------------------------- messaging

    def subscribe(self, topic_filter: str, callback: MessageCallback, qos: int = 1) -> None:
        """Subscribe now (if connected) and after every reconnect.

        Raises:
            TransportError: paho rejected the filter.
        """
        with self._lock:
            self._subs[topic_filter] = (callback, qos)
        if self.connected:
            rc, _mid = self._client.subscribe(topic_filter, qos)
            if rc != MQTTErrorCode.MQTT_ERR_NO_CONN:
                _check(rc, f"subscribe {topic_filter}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        on_ack: Callable[[], None] | None = None,
    ) -> int:
        """Queue a message; QoS 1 survives disconnects (paho resends it on reconnect).

        Args:
            on_ack: called on the network thread when the broker acknowledged it (PUBACK for
                QoS 1; when written for QoS 0).

        Returns:
            The message id.

        Raises:
            TransportError: paho's queue is full or the topic is invalid.
        """
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:
            raise TransportError(f"mqtt publish {topic}: {exc}") from exc
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            _check(info.rc, f"publish {topic}")
        fire = False
        with self._lock:
            if info.mid in self._early_acks:  # PUBACK arrived before we got here
                self._early_acks.discard(info.mid)
                fire = True
            else:
                self._acks[info.mid] = on_ack
        if fire and on_ack is not None:
            on_ack()
        return info.mid

    # ---------------------------------------------------------------- paho callbacks

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self.last_error = str(reason)
            # with an on_connect_failed hook the owner says it (once per outage), else we do
            level = logging.INFO if self._user_on_connect_failed is not None else logging.WARNING
            log.log(level, "mqtt %s: connection refused: %s", self.config.client_id, reason)
            if self._user_on_connect_failed is not None:
                # CONNACK return codes 4 and 5 (MQTT 3.1.1 section 3.2.2.3): bad credentials
                denied = getattr(reason, "value", None) in (4, 5, 0x86, 0x87)
                cause = NOT_AUTHORISED if denied else REFUSED
                _safe(self._user_on_connect_failed, cause, str(reason))
            return
        self.last_error = None
        self.connects += 1
        with self._lock:
            subs = list(self._subs.items())
        for topic_filter, (_cb, qos) in subs:
            client.subscribe(topic_filter, qos)
        self._connected.set()
        if self._user_on_connect is not None:
            _safe(self._user_on_connect)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        # keep a CONNACK refusal ("Not authorized") rather than the generic disconnect reason
        if self.last_error is None and getattr(reason, "is_failure", False):
            self.last_error = str(reason)
        if was and self._user_on_disconnect is not None and not self._stopping:
            _safe(self._user_on_disconnect, str(reason))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho does not pass the socket error on; one short probe tells the causes apart
        if self._user_on_connect_failed is None:
            return
        host, port = parse_broker_url(self.config.url)
        try:
            with socket.create_connection((host, port), timeout=2.0):
                cause, why = UNREACHABLE, f"{host}:{port} accepts TCP but the MQTT handshake failed"
        except ConnectionRefusedError:
            cause, why = REFUSED, f"connection refused: nothing listens on {host}:{port}"
        except OSError as exc:
            cause, why = UNREACHABLE, f"{host}:{port}: {exc.strerror or exc}"
        self.last_error = why
        _safe(self._user_on_connect_failed, cause, why)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            subs = list(self._subs.items())
        for topic_filter, (callback, _qos) in subs:
            if paho.topic_matches_sub(_plain_filter(topic_filter), msg.topic):
                _safe(callback, msg.topic, bytes(msg.payload), bool(msg.retain))

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        with self._lock:
            if mid in self._acks:
                callback = self._acks.pop(mid)
            else:
                self._early_acks.add(mid)
                return
        if callback is not None:
            _safe(callback)

    # ---------------------------------------------------------------- shared-loop hooks

    @property
    def paho(self) -> paho.Client:
        """The wrapped paho client (for :class:`MqttLoop` only)."""
        return self._client


def _plain_filter(topic_filter: str) -> str:
    """``$share/<group>/<filter>`` -> ``<filter>``: messages of a shared subscription
    (MQTT 5.0 section 4.8.2, also honoured by Mosquitto for 3.1.1 clients) arrive with their
    plain topic, which must be matched against the filter without the share prefix."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter


def _safe(func: Callable[..., None], *args: Any) -> None:
    # an exception escaping a paho callback would kill the network loop (paho re-raises)
    try:
        func(*args)
    except Exception:
        log.exception("mqtt callback %r failed", getattr(func, "__qualname__", func))


class MqttLoop:
    """One network thread for many :class:`MqttClient` s (paho's external event loop API:
    ``on_socket_open/close/register_write/unregister_write`` + ``loop_read/write/misc``).

    Reconnects each client with its own exponential backoff (with jitter so 1,000 devices do
    not reconnect in lockstep after a broker restart). A TCP connect blocks the loop briefly
    (paho connects synchronously; bounded by a 2 s ``connect_timeout`` here), so the shared
    loop is meant for simulations and brokers on a fast network; a real device uses its own
    paho thread.
    """

    def __init__(self, name: str = "mqtt-loop") -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._clients: dict[int, _Slot] = {}
        self._pending: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, client: MqttClient) -> None:
        """Drive ``client`` from this loop (called by :meth:`MqttClient.start`)."""
        slot = _Slot(client, client.config.reconnect_min_s, client.config.reconnect_max_s)
        pc = client.paho
        pc.on_socket_open = lambda c, u, s: self._call(lambda: self._register(slot, s))
        pc.on_socket_close = lambda c, u, s: self._call(lambda: self._unregister(s))
        pc.on_socket_register_write = lambda c, u, s: self._call(lambda: self._want_write(s, True))
        pc.on_socket_unregister_write = lambda c, u, s: self._call(
            lambda: self._want_write(s, False)
        )
        self._call(lambda: self._clients.__setitem__(id(client), slot))

    def remove(self, client: MqttClient, timeout_s: float = 5.0) -> None:
        """Stop driving ``client`` once its DISCONNECT is written (or ``timeout_s``)."""
        done = threading.Event()

        def drop() -> None:
            slot = self._clients.pop(id(client), None)
            if slot is not None:
                slot.stopped = True
                sock = client.paho.socket()
                if sock is not None:
                    self._unregister(sock)
                    with contextlib.suppress(OSError):
                        client.paho.loop_write()
            done.set()

        self._call(drop)
        done.wait(timeout_s)

    def close(self) -> None:
        """Stop the loop thread (clients should be stopped first)."""
        self._running = False
        self._wake()
        self._thread.join(timeout=5)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---------------------------------------------------------------- internals

    def _call(self, func: Callable[[], None]) -> None:
        if threading.current_thread() is self._thread:
            func()
            return
        with self._lock:
            self._pending.append(func)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full wake pipe already wakes the loop
            self._wake_w.send(b"\0")

    def _register(self, slot: _Slot, sock: Any) -> None:
        try:
            self._sel.register(sock, selectors.EVENT_READ, slot)
        except (KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ, slot)

    def _unregister(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)

    def _want_write(self, sock: Any, on: bool) -> None:
        try:
            key = self._sel.get_key(sock)
        except (KeyError, ValueError):
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        self._sel.modify(sock, events, key.data)

    def _run(self) -> None:
        last_misc = 0.0
        while self._running:
            for key, events in self._sel.select(timeout=0.25):
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                    continue
                slot: _Slot = key.data
                if slot.stopped:
                    continue
                pc = slot.client.paho
                try:
                    if events & selectors.EVENT_READ:
                        pc.loop_read()
                    if events & selectors.EVENT_WRITE and not slot.stopped:
                        pc.loop_write()
                except Exception:  # one client's failure must not stop the others
                    log.exception("mqtt loop: client %s failed", slot.client.config.client_id)
            with self._lock:
                pending, self._pending = self._pending, []
            for func in pending:
                _safe(func)
            now = time.monotonic()
            if now - last_misc >= 0.5:
                last_misc = now
                for slot in list(self._clients.values()):
                    try:
                        self._service(slot, now)
                    except Exception:
                        log.exception("mqtt loop: client %s", slot.client.config.client_id)

    def _service(self, slot: _Slot, now: float) -> None:
        pc = slot.client.paho
        if slot.stopped:
            return
        if pc.socket() is not None and pc.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            if slot.client.connected:
                slot.delay = slot.min_s
            return
        if now < slot.next_try:
            return
        try:
            pc.reconnect()
        except OSError as exc:
            slot.client.last_error = f"connect failed: {exc}"
            pc_sock = pc.socket()
            if pc_sock is not None:
                self._unregister(pc_sock)
        slot.next_try = now + slot.delay * (0.5 + random.random())
        slot.delay = min(slot.delay * 2, slot.max_s)


class _Slot:
    def __init__(self, client: MqttClient, min_s: float, max_s: float) -> None:
        self.client = client
        self.min_s = min_s
        self.max_s = max_s
        self.delay = min_s
        self.next_try = 0.0
        self.stopped = False
