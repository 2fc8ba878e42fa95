"""What every ``edgeserve fleet`` command shares: where the server is, JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgeserve.errors import ConfigError

__all__ = ["Ctx", "echo_json"]


class Ctx:
    """The group's options: ``--server``, ``--token``, ``--config``."""

    def __init__(self, server: str | None, token: str | None, config: str | None) -> None:
        self.server, self.token, self.config = server, token, config

    def client(self) -> Any:
        from ..client import FleetClient

        server, token = self.server, self.token
        if not (server and token):
            path = Path(self.config or "fleet.toml")
            if not path.is_file():
                raise ConfigError(
                    "where is the fleet server? pass --server and --token, set "
                    "EDGESERVE_FLEET_URL/EDGESERVE_FLEET_TOKEN, or --config"
                )
            from ..config import load_config

            cfg = load_config(path)
            server = server or f"http://{cfg.server.host}:{cfg.server.port}"
            token = token or cfg.server.token
        # a server started a moment ago in the background may not listen yet
        return FleetClient(server, token, connect_wait_s=10.0)


def echo_json(obj: Any) -> None:
    """Print ``obj`` as indented, sorted JSON."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True))
