"""Compiled topic filters against paho's own matcher, on every combination of a few levels,
and the filters a subscription refuses."""

from __future__ import annotations

import itertools

import paho.mqtt.client as paho
import pytest

from edgeserve.errors import TransportError
from edgeserve.mqtt import MqttClient, MqttConfig
from edgeserve.mqtt.matching import compile_filter

_FILTER_LEVELS = ["a", "b", "", "$SYS", "+", "#", "a.b"]
_TOPIC_LEVELS = ["a", "b", "", "$SYS", "a.b", "c*"]


def _filters() -> list[str]:
    out = []
    for n in range(1, 4):
        for levels in itertools.product(_FILTER_LEVELS, repeat=n):
            f = "/".join(levels)
            if "#" not in f[:-1]:  # '#' only as the last level
                out.append(f)
    return out


def test_compiled_filters_match_what_paho_matches() -> None:
    topics = ["/".join(t) for n in range(1, 4) for t in itertools.product(_TOPIC_LEVELS, repeat=n)]
    checked = 0
    for topic_filter in _filters():
        matches = compile_filter(topic_filter)
        for topic in topics:
            assert matches(topic) == paho.topic_matches_sub(topic_filter, topic), (
                topic_filter,
                topic,
            )
            checked += 1
    assert checked > 50_000


def test_wildcard_filters_do_not_match_dollar_topics_but_literal_ones_do() -> None:
    assert not compile_filter("#")("$SYS/broker/uptime")
    assert not compile_filter("+/broker/uptime")("$SYS/broker/uptime")
    assert compile_filter("$SYS/#")("$SYS/broker/uptime")
    assert compile_filter("es/+/dev/+/telemetry")("es/f/dev/d1/telemetry")
    assert not compile_filter("es/+/dev/+/telemetry")("es/f/dev/d1/x/telemetry")


@pytest.mark.parametrize("bad", ["a/#/b", "a#", "a/b+", "+a/b"])
def test_a_malformed_filter_is_refused_at_subscribe(bad: str) -> None:
    with pytest.raises(ValueError):
        compile_filter(bad)
    client = MqttClient(MqttConfig(url="mqtt://127.0.0.1:1", client_id="t"))
    with pytest.raises(TransportError, match=r"wildcard|last level"):
        client.subscribe(bad, lambda *_: None)
