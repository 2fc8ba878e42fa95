"""``edgeserve fleet`` as an operator runs it: output that works, one-line errors."""

from __future__ import annotations

import contextlib
import grp
import json
import subprocess
import sys
from pathlib import Path

import pytest
from edgeserve.agent.sync.config import SyncConfig
from edgeserve.fleet_server.config import load_config
from support.fleet import TOKEN, FleetServerProcess, make_keys
from support.models import make_linear_bundle

from edgeserve.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from edgeserve.cli import main; main()", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def op(server: FleetServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run("--server", server.url, "--token", TOKEN, *args)


def test_device_add_prints_a_working_agent_snippet(
    fleet_server: FleetServerProcess, tmp_path: Path
) -> None:
    out = op(fleet_server, "device", "add", "pi-kitchen-01", "--tags", "site=lyon,hw=rpi5")
    assert out.returncode == 0, out.stderr
    snippet = out.stdout[out.stdout.index("[fleet]") :]
    table = tomllib.loads(snippet)["fleet"]
    assert table["device"] == "pi-kitchen-01" and len(table["password"]) >= 24
    config = SyncConfig.from_mapping(table)  # the agent accepts it as is
    assert config.mqtt_username == "pi-kitchen-01"

    listed = op(fleet_server, "device", "list")
    assert "pi-kitchen-01" in listed.stdout and "hw=rpi5" in listed.stdout

    files = op(fleet_server, "broker-config", "--out", str(tmp_path / "broker"))
    assert files.returncode == 0, files.stderr
    passwords = (tmp_path / "broker" / "passwords").read_text()
    assert passwords.startswith("pi-kitchen-01:$7$101$")
    assert "pattern read es/test/dev/%u/desired" in (tmp_path / "broker" / "acl").read_text()
    # readable by the group of the user a packaged Mosquitto drops to, by nobody else
    st = (tmp_path / "broker" / "passwords").stat()
    assert oct(st.st_mode)[-3:] == "640"
    assert grp.getgrgid(st.st_gid).gr_name == "mosquitto"
    conf = (tmp_path / "broker" / "mosquitto.conf").read_text().splitlines()
    port = fleet_server.broker_url.rsplit(":", 1)[1]
    assert f"listener {port} 127.0.0.1" in conf and "allow_anonymous false" in conf
    assert "use_username_as_clientid true" in conf and "persistence true" in conf
    drop_in = (tmp_path / "broker" / "edgeserve.conf").read_text()
    assert "persistence_location" not in drop_in  # Debian's mosquitto.conf sets it
    # tmp_path is below pytest's 0700 directory: the operator is told Mosquitto cannot reach it
    assert "not searchable by user mosquitto" in files.stderr


def test_release_command_signs_and_uploads(
    fleet_server: FleetServerProcess, tmp_path: Path
) -> None:
    assert fleet_server.keys is not None
    bundle = make_linear_bundle(tmp_path / "model-int8", name="digits", version=3)
    out = op(
        fleet_server, "release", str(bundle.path), "--key", str(fleet_server.keys / "release.key")
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("released digits v3")
    assert (bundle.path / "signature.json").is_file()
    again = op(
        fleet_server, "release", str(bundle.path), "--key", str(fleet_server.keys / "release.key")
    )
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "not above the latest release 3" in again.stderr


def test_errors_are_one_line(fleet_server: FleetServerProcess) -> None:
    down = run("--server", "http://127.0.0.1:9", "--token", "x", "device", "list")
    assert down.returncode == 1 and down.stderr.startswith("error: fleet server")
    assert down.stderr.count("\n") == 1 and "Traceback" not in down.stderr
    wrong = run("--server", fleet_server.url, "--token", "wrong-token", "device", "list")
    assert wrong.returncode == 2 and "token" in wrong.stderr and wrong.stderr.count("\n") == 1
    none = op(fleet_server, "rollout", "pause")
    assert none.returncode == 2 and none.stderr == "error: no rollout yet\n"
    bad = op(fleet_server, "rollout", "start", "--model", "m", "--version", "1", "--phases", "a,b")
    assert bad.returncode == 2 and "--phases" in bad.stderr
    missing = op(fleet_server, "rollout", "start", "--model", "nope", "--version", "1")
    assert missing.returncode == 1 and missing.stderr == "error: no release nope version 1\n"


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    path = tmp_path / "fleet.toml"
    path.write_text('[server]\ntoken = "0123456789abcdef"\nport = "80"\n')
    with pytest.raises(
        ConfigError, match=r"fleet.toml: \[server\] port: must be a non-negative integer"
    ):
        load_config(path)
    path.write_text(
        '[server]\ntoken = "0123456789abcdef"\n[broker]\npassword = "p"\n[rollouts]\ntick_s = -1\n'
    )
    with pytest.raises(ConfigError, match=r"\[rollouts\] tick_s: must be a non-negative number"):
        load_config(path)
    path.write_text('[server]\ntoken = "short"\n')
    with pytest.raises(ConfigError, match="at least 16"):
        load_config(path)
    path.write_text('[server]\ntoken = "0123456789abcdef"\n[broker]\nfleet_name = "x"\n')
    with pytest.raises(ConfigError, match=r"\[broker\]: unknown key\(s\) fleet_name"):
        load_config(path)
    # the server's broker account never has an empty password
    path.write_text('[server]\ntoken = "0123456789abcdef"\n')
    with pytest.raises(ConfigError, match=r"\[broker\] password: empty for user 'fleet-server'"):
        load_config(path)
    path.write_text(
        f'[server]\ntoken = "0123456789abcdef"\n[keys]\nfleet_key = "{keys}/fleet.key"\n'
        '[broker]\npassword = "server-password"\n'
    )
    cfg = load_config(path)
    assert cfg.server.database_url == f"sqlite:///{tmp_path / 'fleet-data' / 'fleet.db'}"
    assert cfg.broker.url == "mqtt://127.0.0.1:1883" and cfg.rollouts.tick_s == 1.0
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_serve_with_embedded_broker_starts_and_stops_cleanly(tmp_path: Path) -> None:
    import socket
    import time

    import httpx
    from support.broker import free_port
    from support.fleet import write_fleet_toml

    broker_port, port = free_port(), free_port()
    config = write_fleet_toml(
        tmp_path,
        f"mqtt://127.0.0.1:{broker_port}",
        port=port,
        keys=make_keys(tmp_path / "keys"),
        broker_auth=True,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from edgeserve.cli import main; main()",
            "fleet",
            "serve",
            "--config",
            str(config),
            "--embedded-broker",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        connected = False
        while time.monotonic() < deadline and not connected:
            with contextlib.suppress(httpx.HTTPError):
                connected = httpx.get(f"http://127.0.0.1:{port}/healthz").json()["mqtt_connected"]
            time.sleep(0.2)
        assert connected, "the server never connected to its embedded broker"
        # a device added now can use the embedded broker at once (files rewritten + reloaded)
        added = run("--config", str(config), "device", "add", "late-1", "--json")
        assert added.returncode == 0, added.stderr
        password = json.loads(added.stdout)["password"]
        time.sleep(0.5)
        pub = subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(broker_port),
                "-u",
                "late-1",
                "-P",
                password,
                "-t",
                "es/test/dev/late-1/presence",
                "-m",
                "online",
                "-q",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert pub.returncode == 0, pub.stderr
        refused = subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(broker_port),
                "-u",
                "late-1",
                "-P",
                "wrong",
                "-t",
                "es/test/dev/late-1/presence",
                "-m",
                "online",
                "-q",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode != 0
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    with socket.socket() as s:  # the embedded broker went away with the server
        assert s.connect_ex(("127.0.0.1", broker_port)) != 0


def test_release_sign_only_then_upload_elsewhere_and_list(
    fleet_server: FleetServerProcess, tmp_path: Path
) -> None:
    assert fleet_server.keys is not None
    bundle = make_linear_bundle(tmp_path / "model", name="digits", version=5)
    key = str(fleet_server.keys / "release.key")
    signed = run(
        "release", "sign", str(bundle.path), "--key", key, "--out", str(tmp_path / "x.tar")
    )
    assert signed.returncode == 0, signed.stderr
    assert (bundle.path / "signature.json").is_file() and (tmp_path / "x.tar").is_file()
    with fleet_server.client() as client:
        assert client.releases() == []  # signing uploads nothing
        assert client.upload_release(tmp_path / "x.tar")["version"] == 5  # a CI job's upload
    listed = op(fleet_server, "release", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["model"], entry["version"]) == ("digits", 5)
    table = op(fleet_server, "release", "list")
    assert "digits" in table.stdout and entry["sha256"][:16] in table.stdout
    stats = op(fleet_server, "stats")
    assert stats.returncode == 0, stats.stderr
    assert "broker connected: True" in stats.stdout and "dropped: none" in stats.stdout


def test_fleet_init_writes_a_fleet_the_server_accepts(tmp_path: Path) -> None:
    made = run("init", str(tmp_path / "fleet"))
    assert made.returncode == 0, made.stderr
    cfg = load_config(tmp_path / "fleet" / "fleet.toml")
    assert len(cfg.server.token) >= 32 and len(cfg.broker.password) >= 24
    assert oct((tmp_path / "fleet" / "fleet.toml").stat().st_mode)[-3:] == "600"
    assert (tmp_path / "fleet" / "keys" / "root.key").is_file()
    assert "move it offline" in made.stdout and "edgeserve fleet serve" in made.stdout
    passwords = (tmp_path / "fleet" / "broker" / "passwords").read_text()
    assert passwords.startswith("fleet-server:$7$")  # the server's account, no device yet
    again = run("init", str(tmp_path / "fleet"))
    assert again.returncode != 0 and again.stderr.count("\n") == 1
    assert "already holds a fleet" in again.stderr
