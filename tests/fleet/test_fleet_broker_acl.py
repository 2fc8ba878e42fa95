"""The generated Mosquitto password file and ACL, enforced by a real Mosquitto.

A device reads only its own desired state and writes only its own reported/telemetry/presence;
the server user has the fleet's subtree. Uses the mosquitto_pub/mosquitto_sub clients so that
the check does not depend on our own MQTT adapter.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from edgeserve.fleet_server.broker.files import write_broker_files
from edgeserve.fleet_server.broker.passwords import hash_password, verify_password
from support.broker import Mosquitto

PASSWORDS = {"dev-a": "pw-a-123456", "dev-b": "pw-b-123456"}
SERVER = ("fleet-server", "server-pw-123")


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    hashed = hash_password("secret", salt=bytes(12))
    assert hashed.startswith("$7$101$") and verify_password("secret", hashed)
    assert not verify_password("wrong", hashed)
    pwfile = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pwfile), "alice", "secret"], check=True)
    theirs = pwfile.read_text().strip().split(":", 1)[1]
    assert verify_password("secret", theirs)  # same algorithm as mosquitto_passwd


def _sub(port: int, user: str, topic: str, wait_s: float = 1.5) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-u",
            user,
            "-P",
            PASSWORDS.get(user, SERVER[1]),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            str(wait_s),
            "-v",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _pub(port: int, user: str, topic: str, message: str, retain: bool = False) -> None:
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-u",
            user,
            "-P",
            PASSWORDS.get(user, SERVER[1]),
            "-t",
            topic,
            "-m",
            message,
            "-q",
            "1",
            *(["-r"] if retain else []),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def secured(tmp_path: Path):
    files = write_broker_files(
        tmp_path / "broker-files",
        [(d, hash_password(p)) for d, p in PASSWORDS.items()],
        prefix="es",
        fleet="f1",
        server_user=SERVER[0],
        server_password=SERVER[1],
    )
    broker = Mosquitto(
        tmp_path / "mq", password_file=files.password_file, acl_file=files.acl_file
    ).start()
    yield broker
    broker.stop()


@pytest.mark.slow
def test_acl_confines_each_device_to_its_own_topics(secured: Mosquitto) -> None:
    port = secured.port
    for dev in PASSWORDS:
        _pub(port, SERVER[0], f"es/f1/dev/{dev}/desired", f"desired-for-{dev}", retain=True)

    own = _sub(port, "dev-a", "es/f1/dev/dev-a/desired")
    assert own.stdout.strip() == "es/f1/dev/dev-a/desired desired-for-dev-a"
    other = _sub(port, "dev-a", "es/f1/dev/dev-b/desired")
    assert other.stdout == ""  # the retained message exists but is not delivered
    wildcard = _sub(port, "dev-a", "es/f1/dev/+/desired")
    assert "dev-b" not in wildcard.stdout

    # writes: the server sees dev-a's own report, never one dev-a forges for dev-b
    watcher = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-u",
            SERVER[0],
            "-P",
            SERVER[1],
            "-t",
            "es/f1/dev/+/reported",
            "-v",
            "-W",
            "4",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.7)
    _pub(port, "dev-a", "es/f1/dev/dev-b/reported", "forged")
    _pub(port, "dev-a", "es/f1/dev/dev-b/desired", "forged-desired", retain=True)
    _pub(port, "dev-a", "es/f1/dev/dev-a/reported", "genuine")
    out, _ = watcher.communicate(timeout=30)
    assert "es/f1/dev/dev-a/reported genuine" in out
    assert "forged" not in out
    assert (
        _sub(port, "dev-b", "es/f1/dev/dev-b/desired").stdout.strip().endswith("desired-for-dev-b")
    )


@pytest.mark.slow
def test_wrong_password_is_refused(secured: Mosquitto) -> None:
    result = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(secured.port),
            "-u",
            "dev-a",
            "-P",
            "not-the-password",
            "-t",
            "es/f1/dev/dev-a/desired",
            "-C",
            "1",
            "-W",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "not authorised" in result.stderr.lower() or "refused" in result.stderr.lower()
