"""Broker settings without the MQTT client: URLs, connection settings, the Last Will, and the
causes a failed connection reports. Importing this module does not import paho.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from edgeserve.errors import ConfigError

__all__ = [
    "NOT_AUTHORISED",
    "REFUSED",
    "UNREACHABLE",
    "MessageCallback",
    "MqttConfig",
    "Will",
    "parse_broker_url",
    "uses_tls",
]

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
