"""MQTT for the agent and the fleet server: the one place that owns paho-mqtt.

Everything else speaks :mod:`edgeserve.protocol` and this small client. Modules:

- ``settings``: broker URLs, :class:`MqttConfig`, the Last Will and the causes a failed
  connection reports (no paho import);
- ``client``: :class:`MqttClient`, one paho client with reconnects, re-subscription, QoS 1
  publishing with PUBACK callbacks and paho return codes as
  :class:`~edgeserve.errors.TransportError`;
- ``loop``: :class:`MqttLoop`, many clients on one network thread (simulations).

This ``__init__`` re-exports the public API.
"""

from __future__ import annotations

from edgeserve.mqtt.client import MqttClient
from edgeserve.mqtt.loop import MqttLoop
from edgeserve.mqtt.settings import (
    NOT_AUTHORISED,
    REFUSED,
    UNREACHABLE,
    MessageCallback,
    MqttConfig,
    Will,
    parse_broker_url,
    uses_tls,
)

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
