"""``edgeserve agent`` commands and ``agent.toml`` validation: one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edgeserve.agent.config import load_config
from support.agent import write_toml
from support.models import make_linear_bundle

from edgeserve.errors import ConfigError

_CLI = [sys.executable, "-c", "from edgeserve.cli import main; main()"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_CLI, *args], capture_output=True, text=True, timeout=60)


def test_agent_cli_install_models_activate_label_remove(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    b1 = make_linear_bundle(tmp_path / "b1", version=1).path
    b2 = make_linear_bundle(tmp_path / "b2", version=2, seed=1).path
    assert "active: 1" in _run("agent", "install", str(b1), "--state", state).stdout
    assert (
        "active: 1" in _run("agent", "install", str(b2), "--state", state, "--no-activate").stdout
    )
    assert _run("agent", "label", "linear", "canary", "2", "--state", state).returncode == 0
    listed = json.loads(_run("agent", "models", "--state", state, "--json").stdout)
    assert listed == [
        {
            "name": "linear",
            "versions": [1, 2],
            "active": 1,
            "previous": None,
            "labels": {"canary": 2},
        }
    ]
    assert _run("agent", "activate", "linear", "2", "--state", state).returncode == 0
    text = _run("agent", "models", "--state", state).stdout
    assert "2*" in text and "canary=2" in text
    assert _run("agent", "remove", "linear", "1", "--state", state).returncode == 0
    failed = _run("agent", "remove", "linear", "2", "--state", state)
    assert failed.returncode == 2 and "is active" in failed.stderr
    missing = _run("agent", "activate", "linear", "7", "--state", state)
    assert missing.returncode == 1 and "version 7 is not installed" in missing.stderr
    assert "Traceback" not in missing.stderr and missing.stderr.count("\n") == 1


def test_agent_cli_install_refuses_a_corrupt_bundle(tmp_path: Path) -> None:
    bundle = make_linear_bundle(tmp_path / "b1")
    data = bytearray((bundle.path / "model.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    (bundle.path / "model.onnx").write_bytes(bytes(data))
    done = _run("agent", "install", str(bundle.path), "--state", str(tmp_path / "s"))
    assert done.returncode == 1 and "sha256 mismatch" in done.stderr
    assert done.stderr.count("\n") == 1


def test_agent_cli_run_refuses_a_public_bind_without_token(tmp_path: Path) -> None:
    done = _run("agent", "run", "--state", str(tmp_path), "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2 and "bearer token" in done.stderr
    bad = write_toml(tmp_path / "agent.toml", {"batching": {"max_batch_sise": 3}})
    done = _run("agent", "run", "--config", str(bad), "--state", str(tmp_path))
    assert done.returncode == 2 and "max_batch_sise" in done.stderr


def test_agent_config_defaults_overrides_and_validation(tmp_path: Path) -> None:
    default = load_config()
    assert default.server.host == "127.0.0.1" and default.batching.max_batch_size == 32
    path = write_toml(
        tmp_path / "agent.toml",
        {
            "state_dir": str(tmp_path),
            "server": {"port": 9001, "max_body_bytes": 1024},
            "batching": {"max_batch_size": 8, "max_queue_delay_us": 500},
            "telemetry": {"interval_s": 5},
            "models": {
                "digits": {
                    "policy": "pinned",
                    "version": 3,
                    "max_batch_size": 4,
                    "labels": {"stable": 3},
                }
            },
            "splits": {"digits-ab": {"model": "digits", "a": 3, "b": 4, "weight_b": 0.1}},
            "fleet": {
                "broker": "mqtt://127.0.0.1:1883",
                "device": "pi-1",
                "trust_anchor": "/etc/edgeserve/root.json",
            },
        },
    )
    cfg = load_config(path, {"server.port": 9002, "batching.enabled": None})
    assert cfg.server.port == 9002 and cfg.server.max_body_bytes == 1024
    digits = cfg.model("digits")
    assert digits.policy == "pinned" and digits.version == 3 and digits.labels == {"stable": 3}
    assert digits.batching.max_batch_size == 4 and digits.batching.max_queue_delay_us == 500
    assert cfg.model("other").batching.max_batch_size == 8
    assert cfg.splits["digits-ab"].weight_b == 0.1
    assert cfg.fleet == {
        "broker": "mqtt://127.0.0.1:1883",
        "device": "pi-1",
        "trust_anchor": "/etc/edgeserve/root.json",
    }
    assert cfg.telemetry_path == tmp_path / "telemetry.jsonl"
    with pytest.raises(ConfigError, match="pinned"):
        load_config(write_toml(tmp_path / "b.toml", {"models": {"m": {"policy": "pinned"}}}))
    for bad, fragment in [
        ({"server": {"port": "80"}}, "non-negative integer"),
        ({"batching": {"max_batch_size": 0}}, "at least 1"),
        ({"models": {"m": {"policy": "newest"}}}, "policy"),
        ({"splits": {"s": {"a": 1, "b": 2, "weight_b": 2}}}, "between 0 and 1"),
        ({"colour": "blue"}, "unknown key"),
        ({"server": {"host": "192.168.1.5"}}, "bearer token"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            load_config(write_toml(tmp_path / "bad.toml", bad))


_FLEET = {"broker": "mqtt://127.0.0.1:1883", "device": "pi-1", "trust_anchor": "/etc/root.json"}


@pytest.mark.parametrize(
    ("fleet", "fragment"),
    [
        ({**_FLEET, "brokr": "x"}, r"\[fleet\]: unknown key\(s\) brokr"),
        ({"broker": "mqtt://127.0.0.1:1883", "device": "pi-1"}, "'trust_anchor' is required"),
        ({**_FLEET, "keepalive_s": "30"}, r"\[fleet\] keepalive_s: must be a non-negative"),
        ({**_FLEET, "clock_slack_s": -1}, r"\[fleet\] clock_slack_s: must be a non-negative"),
        ({**_FLEET, "broker": "http://x"}, "mqtt://"),
        ("not a table", r"\[fleet\]: must be a table"),
    ],
)
def test_agent_config_validates_the_fleet_table_at_load(
    tmp_path: Path, fleet: object, fragment: str
) -> None:
    path = write_toml(tmp_path / "agent.toml", {"fleet": fleet})
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_agent_cli_run_stops_at_start_on_a_bad_fleet_key(tmp_path: Path) -> None:
    bad = write_toml(tmp_path / "agent.toml", {"fleet": {**_FLEET, "telemetry_batch": -5}})
    done = _run("agent", "run", "--config", str(bad), "--state", str(tmp_path), "--port", "0")
    assert done.returncode == 2, done.stderr
    assert "[fleet] telemetry_batch: must be a non-negative integer" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
