"""``edgeserve quickstart``: the whole loop on this machine, in a temporary directory."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType

import click

from edgeserve.errors import ConfigError, EdgeServeError

__all__ = ["quickstart"]


# module -> (pip name, extra) of what the quickstart runs: the converter, agents, fleet server
_NEEDS = {
    "sklearn": ("scikit-learn", "examples"),
    "onnx": ("onnx", "convert"),
    "onnxruntime": ("onnxruntime", "agent"),
    "paho": ("paho-mqtt", "agent"),
    "httpx": ("httpx", "agent"),
    "starlette": ("starlette", "fleet"),
    "uvicorn": ("uvicorn", "fleet"),
}


def _check_installed() -> None:
    missing = [need for module, need in _NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        names = ", ".join(name for name, _ in missing)
        extras = ",".join(sorted({extra for _, extra in missing}))
        raise EdgeServeError(
            f"edgeserve quickstart needs {names}: pip install 'edgeserve-toolkit[{extras}]' "
            "(or 'edgeserve-toolkit[all]')"
        )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same clean path as Ctrl-C: stop every child, remove the directory
    raise KeyboardInterrupt


@click.command()
@click.option("--keep", is_flag=True, help="Leave everything running; print URLs and commands.")
@click.option(
    "--agents",
    type=click.IntRange(1, 10),
    default=3,
    show_default=True,
    help="How many agents (devices) to start.",
)
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Work in this (empty) directory and keep it, instead of a temporary one.",
)
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "amqtt"]),
    default="auto",
    show_default=True,
    help="MQTT broker: Mosquitto when on PATH (auto), or the embedded amqtt broker.",
)
@click.option(
    "--broker-url",
    envvar="EDGESERVE_BROKER_URL",
    default=None,
    metavar="mqtt://HOST:PORT",
    help="Use this running broker (anonymous access) instead of starting one "
    "[env EDGESERVE_BROKER_URL].",
)
def quickstart(
    keep: bool, agents: int, workdir: Path | None, broker: str, broker_url: str | None
) -> None:
    """Run the whole loop on this machine: train, convert, release, roll out, experiment, serve.

    Needs no broker, database or network. Every step runs the real `edgeserve` commands as
    separate processes and prints them; everything is stopped and the temporary directory
    removed at the end (or on Ctrl-C).
    """
    _check_installed()
    if broker_url is not None:
        from edgeserve.mqtt import parse_broker_url

        parse_broker_url(broker_url)  # ConfigError (exit 2) on a bad URL, before any work
    from edgeserve.quickstart.scenario import Quickstart

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        if any(workdir.iterdir()):
            raise ConfigError(f"--dir {workdir}: directory is not empty")
        root, remove = workdir.resolve(), False
    else:
        root, remove = Path(tempfile.mkdtemp(prefix="edgeserve-quickstart-")), True
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    qs = Quickstart(root, agents=agents, echo=click.echo, broker_kind=broker, broker_url=broker_url)
    click.echo(f"edgeserve quickstart in {root}")
    try:
        result = qs.run(keep=keep)
        if keep:
            _print_keep(qs)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                click.echo("\nstopping")
        summary = ", ".join(f"{d}=v{v}" for d, v in sorted(result.active_versions.items()))
        click.echo(
            f"\ndone in {time.monotonic() - started:.1f}s: active versions {summary}; "
            f"experiment verdict: {result.verdict}"
        )
    finally:
        qs.close()
        signal.signal(signal.SIGTERM, previous)
        if remove:
            shutil.rmtree(root, ignore_errors=True)
            click.echo(f"removed {root}")
        else:
            click.echo(f"kept {root}")


def _print_keep(qs: object) -> None:
    from edgeserve.quickstart.scenario import MODEL, Quickstart

    assert isinstance(qs, Quickstart)
    agent = qs.agents[0]
    click.echo("\nrunning (Ctrl-C stops everything):")
    click.echo(f"  fleet server   {qs.fleet_url}  (token {qs.token})")
    kind = qs.broker.kind if qs.broker is not None else "configured"
    click.echo(f"  MQTT broker    {qs.broker_url}  ({kind})")
    for a in qs.agents:
        click.echo(f"  agent {a.device:<8} {a.url}   state {a.state_dir}")
    click.echo("\ntry:")
    click.echo(f"  cd {qs.workdir}")
    click.echo(f"  export EDGESERVE_FLEET_URL={qs.fleet_url} EDGESERVE_FLEET_TOKEN={qs.token}")
    click.echo("  edgeserve fleet device list")
    click.echo("  edgeserve fleet rollout status")
    click.echo("  edgeserve fleet experiment report")
    click.echo(f"  curl {agent.url}/v2/models/{MODEL}")
    click.echo(f"  curl -s {agent.url}/metrics | grep edgeserve_ | head")
    click.echo(f"  edgeserve agent models --state {agent.state_dir}")
