"""Telemetry from the agent's on-disk buffer: published at QoS 1, acknowledged in the buffer
only on PUBACK, kept while the broker is down and sent after it comes back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edgeserve.agent.serving.telemetry import TelemetryBuffer
from support.broker import Mosquitto
from support.fleet_sync import FLEET

from edgeserve.mqtt import MqttClient, MqttConfig
from edgeserve.protocol import Telemetry, decode, topics


def _wait(pred, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_sync_telemetry_is_published_acked_and_resent_after_outage(
    make_device, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    buffer = TelemetryBuffer(tmp_path / "telemetry.jsonl", max_bytes=1_000_000)
    received: list[Telemetry] = []
    lock = threading.Lock()

    def on_telemetry(topic: str, payload: bytes, retained: bool) -> None:
        with lock:
            received.append(decode(payload, Telemetry))  # type: ignore[arg-type]

    collector = MqttClient(MqttConfig(mosquitto.url, "collector"))
    collector.subscribe(topics("es/", FLEET, "dev1").telemetry, on_telemetry)
    collector.start()
    collector.wait_connected()
    sync, _inst = make_device(telemetry=buffer, telemetry_interval_s=0.2, telemetry_batch=3)
    try:
        for i in range(5):
            buffer.append({"model": "linear", "n": i})
        _wait(lambda: len(buffer) == 0)  # two batches (3 + 2), each acked on PUBACK
        with lock:
            got = [s["n"] for t in received for s in t.summaries]
        assert got == [0, 1, 2, 3, 4]

        mosquitto.stop()
        _wait(lambda: not sync.mqtt.connected)
        for i in range(5, 8):
            buffer.append({"model": "linear", "n": i})
        time.sleep(0.6)  # several ticks while offline: nothing is lost or acked
        assert len(buffer) == 3
        mosquitto.start()
        collector.wait_connected(15)
        _wait(lambda: len(buffer) == 0, 30)
        _wait(lambda: any(s["n"] == 7 for t in list(received) for s in t.summaries), 10)
        with lock:
            got = sorted({s["n"] for t in received for s in t.summaries})
        assert got == list(range(8))
        assert all(t.device == "dev1" and t.dropped == 0 for t in received)
    finally:
        collector.stop()
        sync.stop()
        buffer.close()
