"""``edgeserve agent run`` without click: the plain command line is parsed by hand, everything
else still goes to click, and both answer the same."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from edgeserve.agent.run_args import RunArgs, parse_agent_run
from support.agent import start_agent, write_toml

_CLI = [sys.executable, "-c", "from edgeserve.cli import main; main()"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_CLI, *args], capture_output=True, text=True, timeout=60)


def _imported(log: str) -> set[str]:
    """Module names from ``-X importtime`` lines."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_plain_agent_run_serves_without_importing_click(state_dir: Path) -> None:
    agent = start_agent(
        state_dir,
        extra_args=["--workers=2", "--no-batching", "--max-batch-size", "4"],
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    try:
        config = httpx.get(f"{agent.url}/v2/models/linear/config", timeout=10)
        assert config.status_code == 200
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]}
        assert httpx.post(f"{agent.url}/v2/models/linear/infer", json=body).status_code == 200
    finally:
        assert agent.stop() == 0
    imported = _imported(agent.log())
    assert "edgeserve.agent.runner" in imported
    assert not {m for m in imported if m == "click" or m.startswith("click.")}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "Invalid value for '--port'"),
        (["--port"], "'--port' requires an argument"),
        (["--workers", "0"], "Invalid value for '--workers'"),
        (["--frobnicate"], "No such option '--frobnicate'"),
    ],
)
def test_what_the_plain_parser_does_not_take_gets_clicks_usage_error(
    state_dir: Path, args: list[str], message: str
) -> None:
    done = _run("agent", "run", "--state", str(state_dir), *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_neither_state_nor_config_is_a_usage_error() -> None:
    done = _run("agent", "run", "--port", "0")
    assert done.returncode == 2
    assert "give --state DIR or --config agent.toml" in done.stderr


def test_help_still_comes_from_click() -> None:
    done = _run("agent", "run", "--help")
    assert done.returncode == 0
    assert "--max-queue-delay-us" in done.stdout


def test_errors_while_running_are_one_line_with_their_exit_code(
    state_dir: Path, tmp_path: Path
) -> None:
    bad = write_toml(tmp_path / "agent.toml", {"state_dir": str(state_dir), "nonsense": 1})
    done = _run("agent", "run", "--config", str(bad))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = _run("agent", "run", "--state", str(state_dir), "--port", port)
    assert done.returncode == 2, done.stderr
    assert "cannot listen on 127.0.0.1:" in done.stderr and "Traceback" not in done.stderr


def test_parse_takes_the_plain_form_and_the_environment(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "agent.toml", {})
    got = parse_agent_run(
        ["-vv", "agent", "run", f"--config={config}", "--provider", "A", "--provider=B"],
        {"EDGESERVE_AGENT_TOKEN": "t", "EDGESERVE_STATE": ""},
    )
    assert got == RunArgs(config_path=config, token="t", providers=("A", "B"), verbose=2)
    got = parse_agent_run(["agent", "run", "--port", "0", "--batching"], {"EDGESERVE_STATE": "s"})
    assert got == RunArgs(state=Path("s"), port=0, batching=True)


@pytest.mark.parametrize(
    "argv",
    [
        ["agent", "run"],
        ["--version"],
        ["agent", "install", "b", "--state", "s"],
        ["agent", "run", "--state", "s", "--state", "t"],
        ["agent", "run", "--state", "s", "--threads", "-1"],
        ["agent", "run", "--state", "s", "--port", "٣"],
        ["agent", "run", "--state", "s", "--host="],
        ["agent", "run", "--config", "/nonexistent/agent.toml"],
        ["-vh", "agent", "run", "--state", "s"],
        ["agent", "run", "--state", "s", "extra"],
    ],
)
def test_parse_leaves_the_rest_to_click(argv: list[str]) -> None:
    assert parse_agent_run(argv, {}) is None


def test_every_option_click_declares_parses_by_hand_to_the_same_values(tmp_path: Path) -> None:
    """An option added to click's ``agent run`` and not to the hand parser fails here, instead
    of quietly costing every device click's import."""
    import copy

    import click
    from edgeserve.agent.cli import run

    click_run = copy.deepcopy(run)  # parsing leaves state on the command that --help would show

    config = write_toml(tmp_path / "agent.toml", {})
    samples: dict[str, list[str]] = {"--config": [str(config)], "--state": [str(tmp_path)]}
    options = [p for p in click_run.params if isinstance(p, click.Option)]
    assert len(options) >= 13
    for param in options:
        if "--config" in param.opts:
            continue
        argv = ["--config", str(config)]
        if param.is_flag and param.secondary_opts:
            argv += [param.secondary_opts[0]]
        elif param.multiple:
            argv += [param.opts[0], "A", param.opts[0], "B"]
        elif isinstance(param.type, click.IntRange):
            argv += [param.opts[0], str(max(param.type.min or 0, 1))]
        else:
            argv += [param.opts[0], *samples.get(param.opts[0], ["h"])]
        with click_run.make_context("run", list(argv)) as ctx:
            expected = RunArgs(**ctx.params)
        assert parse_agent_run(["agent", "run", *argv], {}) == expected, argv
