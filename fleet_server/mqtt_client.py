"""The fleet server's MQTT client: :class:`edgeserve.mqtt.MqttClient` plus shared subscriptions.

A shared subscription filter ``$share/<group>/<filter>`` (MQTT 5.0 §4.8.2) is what the server
subscribes to, but messages arrive with their plain topic, which never matches the
``$share/...`` string itself. The core adapter dispatches by matching the filter as given, so
this subclass strips the ``$share/<group>/`` part before matching. (Minimal piece kept here
rather than in ``edgeserve/mqtt.py``, which another engineer owns; it could move there.)
"""

from __future__ import annotations

from typing import Any

from edgeserve.mqtt import MqttClient

__all__ = ["FleetMqttClient", "plain_filter", "topic_matches"]


def plain_filter(topic_filter: str) -> str:
    """``$share/g/a/+/b`` -> ``a/+/b``; other filters unchanged."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else topic_filter
    return topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (MQTT 5.0 §4.7: ``+`` one level, ``#`` the rest)."""
    fparts, tparts = topic_filter.split("/"), topic.split("/")
    for i, f in enumerate(fparts):
        if f == "#":
            return True
        if i >= len(tparts) or (f != "+" and f != tparts[i]):
            return False
    return len(fparts) == len(tparts)


class FleetMqttClient(MqttClient):
    """An :class:`MqttClient` whose dispatch understands shared subscriptions."""

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            subs = list(self._subs.items())
        for topic_filter, (callback, _qos) in subs:
            if topic_matches(plain_filter(topic_filter), msg.topic):
                try:
                    callback(msg.topic, bytes(msg.payload), bool(msg.retain))
                except Exception:  # never let a callback kill paho's network loop
                    import logging

                    logging.getLogger(__name__).exception("mqtt callback failed")
