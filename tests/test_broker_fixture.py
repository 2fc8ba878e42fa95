"""The Mosquitto fixture is a real broker: a retained message survives a restart."""

from __future__ import annotations

import subprocess

from support.broker import Mosquitto


def test_retained_message_survives_restart(mosquitto: Mosquitto) -> None:
    pub = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1"]
    subprocess.run([*pub, "-t", "t/x", "-m", "hello", "-r"], check=True, timeout=10)
    mosquitto.restart()
    sub = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t", "t/x", "-C", "1"]
    out = subprocess.run(sub, capture_output=True, text=True, check=True, timeout=10)
    assert out.stdout.strip() == "hello"
