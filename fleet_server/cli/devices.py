"""``edgeserve fleet device``: register a device (printing its agent settings) and list them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..api import selector
from .common import Ctx, echo_json

__all__ = ["device"]


@click.group()
def device() -> None:
    """Register and list devices."""


def _agent_snippet(creds: dict[str, Any], trust_anchor: str = "/etc/edgeserve/root.json") -> str:
    # keys of agent/sync/config.py (the agent's [fleet] table)
    return (
        "[fleet]\n"
        f'broker = "{creds["broker_url"]}"\n'
        f'fleet = "{creds["fleet"]}"\n'
        f'device = "{creds["id"]}"\n'
        f'username = "{creds["username"]}"\n'
        f'password = "{creds["password"]}"\n'
        f'prefix = "{creds["prefix"]}"\n'
        f'server_url = "{creds["server_url"]}"\n'
        f'trust_anchor = "{trust_anchor}"   # keys/root.json, copied to the device\n'
    )


@device.command("add")
@click.argument("device_id")
@click.option("--tags", default="", help="k=v,k2=v2")
@click.option("--json", "as_json", is_flag=True, help="Print the credentials as JSON.")
@click.option(
    "--agent-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the device's agent.toml here (mode 0600).",
)
@click.option(
    "--trust-anchor",
    default="/etc/edgeserve/root.json",
    show_default=True,
    help="Where the device finds this fleet's keys/root.json (a local file: its absolute path).",
)
@click.pass_obj
def device_add(
    obj: Ctx,
    device_id: str,
    tags: str,
    as_json: bool,
    agent_config: Path | None,
    trust_anchor: str,
) -> None:
    """Register DEVICE_ID; print its broker credentials (shown once) and an agent.toml snippet."""
    with obj.client() as client:
        creds = client.add_device(device_id, selector(tags, "--tags"))
    if Path(trust_anchor).is_file():  # this machine runs the agent too: pin the real file
        trust_anchor = str(Path(trust_anchor).resolve())
    snippet = _agent_snippet(creds, trust_anchor)
    if agent_config is not None:
        from edgeserve.fsutil import write_atomic

        write_atomic(agent_config, snippet.encode(), 0o600)
    if as_json:
        echo_json(creds)
        return
    click.echo(
        f"device {creds['id']} registered; broker user {creds['username']}, "
        f"password {creds['password']} (shown once)"
    )
    click.echo("run `edgeserve fleet broker-config --out DIR` and reload Mosquitto (SIGHUP)")
    if agent_config is not None:
        click.echo(f"wrote {agent_config}: its agent.toml ([fleet] table)")
    else:
        click.echo("\n# agent.toml\n" + snippet)


@device.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def device_list(obj: Ctx, as_json: bool) -> None:
    """Devices, their presence and what they run."""
    with obj.client() as client:
        devices = client.devices()
    if as_json:
        echo_json(devices)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("device", "tags", "presence", "models", "seq")
    for d in devices:
        models = ", ".join(f"{n} v{m['active']} {m['state']}" for n, m in d["models"].items())
        tags = ",".join(f"{k}={v}" for k, v in d["tags"].items())
        table.add_row(d["id"], tags, d["presence"], models or "-", str(d["desired_seq"]))
    Console().print(table)
