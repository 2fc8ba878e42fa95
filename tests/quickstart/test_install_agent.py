"""devices/install-agent.sh, run for real into a temporary root (``--root``): what it writes,
that the agent accepts the agent.toml it renders, that the unit is hardened, and that
``--uninstall`` undoes it. Also ``--dry-run`` and the platform decisions (TFLite runtime,
Jetson's GPU build)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edgeserve.agent.config import load_config
from edgeserve.agent.sync.config import SyncConfig

from edgeserve import __version__

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "devices" / "install-agent.sh"
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def install(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=240, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"install-agent.sh failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
        )
    return proc


def unit_settings(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_install_agent_dry_run_writes_nothing(tmp_path: Path) -> None:
    proc = install("--dry-run", "--root", str(tmp_path), "--profile", "rpi5")
    assert files_under(tmp_path) == []
    out = proc.stdout
    assert "python3 -m venv" in out and "/opt/edgeserve/venv" in out
    assert "edgeserve-toolkit\\[agent\\,tflite\\]" in out  # printed with shell quoting
    assert "write " + str(tmp_path / "etc/systemd/system/edgeserve-agent.service") in out
    assert "(skipped under --root: systemctl enable --now edgeserve-agent.service)" in out


@pytest.mark.slow
def test_install_agent_into_root_then_uninstall(tmp_path: Path, edgeserve_wheel: Path) -> None:
    root = tmp_path / "root"
    common = ["--root", str(root), "--profile", "rpi5", "--python", BASE_PYTHON]
    # what `edgeserve fleet device add` prints, saved to a file, and the fleet's root keys
    fleet = tmp_path / "pi-01.txt"
    fleet.write_text(
        "device pi-01 registered; broker user pi-01, password pw (shown once)\n\n# agent.toml\n"
        '[fleet]\nbroker = "mqtt://fleet.example:1883"\nfleet = "default"\ndevice = "pi-01"\n'
        'username = "pi-01"\npassword = "pw"\nprefix = "es/"\n'
        'server_url = "http://fleet.example:8700"\n'
        'trust_anchor = "root.json"   # copy keys/root.json to the device\n'
    )
    anchor = tmp_path / "root.json"
    anchor.write_text('{"root": "keys"}')
    proc = install(
        "--fleet-config",
        str(fleet),
        "--trust-anchor",
        str(anchor),
        *common,
        "--package",
        str(edgeserve_wheel),
        "--pip-args",
        "--no-deps --no-index",
        "--no-check",
        "--port",
        "8123",
    )
    assert "installed edgeserve agent (profile rpi5)" in proc.stdout

    venv = root / "opt/edgeserve/venv"
    assert (venv / "bin/edgeserve").exists()
    dist_info = f"python3.*/site-packages/edgeserve_toolkit-{__version__}.dist-info"
    assert list((venv / "lib").glob(dist_info))
    # bytecode is compiled at install: the service user cannot write it into the venv
    bytecode = "python3.*/site-packages/edgeserve/agent/__pycache__/runner.*.pyc"
    assert list((venv / "lib").glob(bytecode))
    state = root / "var/lib/edgeserve"
    assert state.is_dir() and (state.stat().st_mode & 0o777) == 0o750

    # the agent's own loader accepts the rendered config
    agent_toml = root / "etc/edgeserve/agent.toml"
    assert (agent_toml.stat().st_mode & 0o777) == 0o640
    cfg = load_config(agent_toml)
    assert cfg.state_dir == Path("/var/lib/edgeserve")
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8123)
    assert cfg.runtime.providers == ("CPUExecutionProvider",)
    assert cfg.fleet is not None
    fleet_cfg = SyncConfig.from_mapping(cfg.fleet)
    assert (fleet_cfg.device, fleet_cfg.broker) == ("pi-01", "mqtt://fleet.example:1883")
    assert fleet_cfg.trust_anchor == Path("/etc/edgeserve/root.json")
    assert (root / "etc/edgeserve/root.json").read_text() == anchor.read_text()

    unit = unit_settings(root / "etc/systemd/system/edgeserve-agent.service")
    assert unit["ExecStart"] == (
        "/opt/edgeserve/venv/bin/edgeserve agent run --config /etc/edgeserve/agent.toml"
    )
    assert unit["User"] == "edgeserve"
    assert unit["Restart"] == "always"
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["ProtectSystem"] == "strict"
    assert unit["ReadWritePaths"] == "/var/lib/edgeserve"
    assert unit["PrivateDevices"] == "yes"
    assert unit["CapabilityBoundingSet"] == ""
    assert not [
        line
        for line in (root / "etc/systemd/system/edgeserve-agent.service").read_text().splitlines()
        if re.search(r"@[A-Z_]+@", line)
    ]

    # a second run keeps the operator's config and writes the profile's beside it
    agent_toml.write_text(agent_toml.read_text().replace("port = 8123", "port = 9000"))
    proc = install(
        *common,
        "--package",
        str(edgeserve_wheel),
        "--pip-args",
        "--no-deps --no-index",
        "--no-check",
    )
    assert "port = 9000" in agent_toml.read_text()
    assert (root / "etc/edgeserve/agent.toml.new").exists()

    install(*common, "--uninstall")
    assert not venv.exists()
    assert not (root / "etc/systemd/system/edgeserve-agent.service").exists()
    assert state.is_dir() and agent_toml.exists()  # kept: models and operator config

    install(*common, "--uninstall", "--purge")
    assert not state.exists() and not (root / "etc/edgeserve").exists()
    assert not (root / "opt/edgeserve").exists()


def test_install_agent_fleet_section_is_appended(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[fleet]\nbroker = "mqtt://fleet.example:1883"\ndevice_id = "pi-01"\n')
    proc = install(
        "--dry-run",
        "--root",
        str(tmp_path / "r"),
        "--profile",
        "rpi5",
        "--fleet-config",
        str(fleet),
    )
    assert '|   [fleet]\n|   broker = "mqtt://fleet.example:1883"' in proc.stdout
    fleet.write_text("broker = 'x'\n")
    proc = install(
        "--dry-run",
        "--root",
        str(tmp_path / "r"),
        "--profile",
        "rpi5",
        "--fleet-config",
        str(fleet),
        check=False,
    )
    assert proc.returncode == 1 and "no [fleet] section" in proc.stderr


def test_install_agent_jetson_without_gpu_build_says_so(tmp_path: Path) -> None:
    proc = install(
        "--dry-run",
        "--root",
        str(tmp_path),
        "--profile",
        "jetson-orin-nano",
        "--python",
        BASE_PYTHON,
    )
    assert "onnxruntime-gpu is NOT installed" in proc.stderr
    assert "--ort-wheel" in proc.stderr
    # CPU-only providers in the config, GPU device nodes reachable by the unit
    assert '|   providers = ["CPUExecutionProvider"]' in proc.stdout
    assert "|   PrivateDevices=no" in proc.stdout
    assert "|   SupplementaryGroups=video render" in proc.stdout


def test_install_agent_jetson_gpu_wheel_skips_pypi_onnxruntime(tmp_path: Path) -> None:
    wheel = tmp_path / "onnxruntime_gpu-1.19.0-cp310-cp310-linux_aarch64.whl"
    wheel.write_bytes(b"")
    proc = install(
        "--dry-run",
        "--root",
        str(tmp_path / "r"),
        "--profile",
        "jetson-orin-nano",
        "--ort-wheel",
        str(wheel),
    )
    assert "onnxruntime-gpu from" in proc.stdout
    assert "--no-deps" in proc.stdout
    assert "except onnxruntime" in proc.stdout
    assert (
        '|   providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", '
        '"CPUExecutionProvider"]' in proc.stdout
    )


def test_install_agent_tflite_runtime_needs_its_platform(tmp_path: Path) -> None:
    # this CI machine is x86_64: tflite-runtime's constraints are named, nothing written
    proc = install(
        "--root", str(tmp_path), "--profile", "rpi4", "--tflite", "tflite-runtime", check=False
    )
    assert proc.returncode == 1
    assert "tflite-runtime needs aarch64, Python <= 3.11 and glibc >= 2.34" in proc.stderr
    assert files_under(tmp_path) == []
    # auto falls back to LiteRT and says why
    proc = install("--dry-run", "--root", str(tmp_path), "--profile", "rpi4")
    assert "using ai-edge-litert" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "toaster"], "no device profile"),
        (["--frobnicate"], "unknown option: --frobnicate"),
        (["--tflite", "maybe"], "--tflite must be"),
        (["--state", "relative/dir"], "must be an absolute path"),
        (["--purge"], "--purge only goes with --uninstall"),
    ],
    ids=["profile", "option", "tflite", "state", "purge"],
)
def test_install_agent_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    proc = install("--dry-run", "--root", str(tmp_path), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert files_under(tmp_path) == []


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt install shellcheck)"
)
def test_install_agent_shellcheck_clean() -> None:
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


def test_install_agent_no_systemd_installs_into_root_without_systemctl() -> None:
    # a chroot or image build: user, ownership and unit as on a device, no systemctl at all
    proc = install("--dry-run", "--no-systemd", "--profile", "rpi5", "--python", BASE_PYTHON)
    out = proc.stdout
    assert "+ chown -R edgeserve:edgeserve /var/lib/edgeserve" in out
    assert "write /etc/systemd/system/edgeserve-agent.service" in out
    assert "(skipped, --no-systemd: systemctl daemon-reload)" in out
    assert "(skipped, --no-systemd: systemctl enable --now edgeserve-agent.service)" in out
    assert not [line for line in out.splitlines() if line.startswith("+ systemctl")]
