"""The ``edgeserve fleet`` group (where the server is) and ``serve``."""

from __future__ import annotations

import logging

import click

from .common import Ctx

__all__ = ["fleet", "serve"]


@click.group()
@click.option("--server", envvar="EDGESERVE_FLEET_URL", help="Fleet server URL.")
@click.option("--token", envvar="EDGESERVE_FLEET_TOKEN", help="Operator token.")
@click.option(
    "--config",
    "config",
    envvar="EDGESERVE_FLEET_CONFIG",
    type=click.Path(dir_okay=False),
    help="fleet.toml (default ./fleet.toml).",
)
@click.pass_context
def fleet(ctx: click.Context, server: str | None, token: str | None, config: str | None) -> None:
    """Run the fleet server; release, roll out and experiment across devices."""
    ctx.obj = Ctx(server, token, config)


@fleet.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="fleet.toml (default: the group's --config or ./fleet.toml).",
)
@click.option(
    "--embedded-broker",
    is_flag=True,
    help="Also run an MQTT broker in-process on [broker] url (one-machine setups).",
)
@click.pass_obj
def serve(obj: Ctx, config_path: str | None, embedded_broker: bool) -> None:
    """Run the fleet server (HTTP API, web console at /ui/, artifacts, MQTT, controller)."""
    from ..config import load_config
    from ..server import FleetServer

    cfg = load_config(config_path or obj.config or "fleet.toml")
    # the start line, broker outages and recoveries are shown without -v
    status = logging.getLogger("edgeserve.fleet_server.broker.status")
    if status.getEffectiveLevel() > logging.INFO:
        status.setLevel(logging.INFO)
    FleetServer(cfg).serve(embedded_broker=embedded_broker)
