"""The MQTT client: one paho-mqtt client (``CallbackAPIVersion.VERSION2``) behind a small API.

- connect with username/password and a Last Will, reconnect with exponential backoff
  (paho's ``reconnect_delay_set``), re-subscribe after every (re)connect because sessions are
  clean (MQTT 3.1.1 section 3.1.2.4: a clean session forgets subscriptions);
- ``subscribe(filter, callback)`` - callbacks get ``(topic, payload, retained)``; shared
  subscriptions (``$share/<group>/<filter>``) are dispatched by their plain filter;
- ``publish(topic, payload, qos=1, retain=..., on_ack=...)`` - QoS 1 messages published while
  offline are queued by paho and (re)sent on reconnect; ``on_ack`` fires on PUBACK
  (section 4.3.2), which is when a sender may forget a message;
- ``stop()`` - a clean DISCONNECT, so the broker discards the Will (section 3.1.2.5).

paho return codes become :class:`~edgeserve.errors.TransportError`; connection failures are
reported with the causes of :mod:`edgeserve.mqtt.settings`.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edgeserve.errors import ConfigError, TransportError
from edgeserve.mqtt.matching import compile_filter
from edgeserve.mqtt.settings import (
    NOT_AUTHORISED,
    REFUSED,
    UNREACHABLE,
    MessageCallback,
    MqttConfig,
    parse_broker_url,
    uses_tls,
)

if TYPE_CHECKING:  # the loop drives clients; a client only hands itself to it
    from edgeserve.mqtt.loop import MqttLoop

__all__ = ["MqttClient", "call_safely"]

log = logging.getLogger(__name__)


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
        self._matchers: dict[str, Callable[[str], bool]] = {}
        # what the network thread matches each message against, replaced whole on subscribe
        self._routes: tuple[tuple[Callable[[str], bool], MessageCallback], ...] = ()
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
        try:
            matches = compile_filter(_plain_filter(topic_filter))
        except ValueError as exc:
            raise TransportError(f"mqtt subscribe: {exc}") from exc
        with self._lock:
            self._subs[topic_filter] = (callback, qos)
            self._matchers[topic_filter] = matches
            self._routes = tuple((self._matchers[f], cb) for f, (cb, _q) in self._subs.items())
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
                call_safely(self._user_on_connect_failed, cause, str(reason))
            return
        self.last_error = None
        self.connects += 1
        with self._lock:
            subs = list(self._subs.items())
        for topic_filter, (_cb, qos) in subs:
            client.subscribe(topic_filter, qos)
        self._connected.set()
        if self._user_on_connect is not None:
            call_safely(self._user_on_connect)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        # keep a CONNACK refusal ("Not authorized") rather than the generic disconnect reason
        if self.last_error is None and getattr(reason, "is_failure", False):
            self.last_error = str(reason)
        if was and self._user_on_disconnect is not None and not self._stopping:
            call_safely(self._user_on_disconnect, str(reason))

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
        call_safely(self._user_on_connect_failed, cause, why)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        for matches, callback in self._routes:
            if matches(topic):
                call_safely(callback, topic, bytes(msg.payload), bool(msg.retain))

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
            call_safely(callback)

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


def call_safely(func: Callable[..., None], *args: Any) -> None:
    """Run a user callback; log, never raise, what it raises."""
    # an exception escaping a paho callback would kill the network loop (paho re-raises)
    try:
        func(*args)
    except Exception:
        log.exception("mqtt callback %r failed", getattr(func, "__qualname__", func))
