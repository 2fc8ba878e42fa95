"""``edgeserve fleet init DIR``: everything a first fleet needs, in one directory.

- ``keys/``: root, release and fleet keys, keyring v1 and the device trust anchor
  (``edgeserve keys init``); the root key signs only keyrings and belongs offline;
- ``fleet.toml`` (mode 0600): a generated operator token and broker password;
- ``broker/``: the Mosquitto password file (the server's account), ACL and configuration
  (:func:`.broker.files.write_broker_files`), so the broker can start before any device exists.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from edgeserve.errors import StorageError
from edgeserve.fsutil import write_atomic

from .broker import files as bc
from .config import load_config

__all__ = ["FleetDir", "init_fleet"]

SERVER_USER = "fleet-server"


@dataclass(frozen=True)
class FleetDir:
    """What ``init_fleet`` wrote."""

    root: Path
    config: Path
    keys: Path
    broker: bc.BrokerFiles
    url: str


def _fleet_toml(token: str, password: str, host: str, port: int, broker_url: str) -> str:
    return (
        "# edgeserve fleet server (written by `edgeserve fleet init`). Keys: README, fleet.toml.\n"
        "[server]\n"
        f'host = "{host}"\n'
        f"port = {port}\n"
        f'token = "{token}"             # operator bearer token for /api/v1\n'
        'data_dir = "data"                # artifacts and the SQLite store\n'
        "\n"
        "[broker]\n"
        f'url = "{broker_url}"\n'
        f'username = "{SERVER_USER}"\n'
        f'password = "{password}"       # in broker/passwords as a $7$ hash\n'
        "\n"
        "[keys]\n"
        'fleet_key = "keys/fleet.key"\n'
        'keyring = "keys/keyring.json"\n'
    )


def init_fleet(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    broker_url: str = "mqtt://127.0.0.1:1883",
) -> FleetDir:
    """Create a fleet directory.

    Args:
        root: the directory (created; must not hold a ``fleet.toml`` or keys yet).
        host: the HTTP bind address written to ``fleet.toml``.
        port: the HTTP port.
        broker_url: ``[broker] url``; also the generated Mosquitto listener.

    Returns:
        The paths written and the server URL.

    Raises:
        StorageError: the directory already holds a fleet, or cannot be written.
        ConfigError: a broker URL the configuration refuses.
    """
    from edgeserve.trust.keydir import init_keys

    root = root.resolve()
    config = root / "fleet.toml"
    if config.exists() or (root / "keys" / "root.key").exists():
        raise StorageError(f"{root}: already holds a fleet (fleet.toml or keys/); not touched")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {root}: {exc.strerror or exc}") from exc
    password = secrets.token_urlsafe(24)
    text = _fleet_toml(secrets.token_urlsafe(32), password, host, port, broker_url)
    write_atomic(config, text.encode(), 0o600)
    cfg = load_config(config)  # the file we wrote must be one the server accepts
    init_keys(root / "keys")
    b = cfg.broker
    files = bc.write_broker_files(
        root / "broker",
        [],
        prefix=b.prefix,
        fleet=b.fleet,
        server_user=b.username,
        server_password=b.password,
        url=b.url,
    )
    return FleetDir(root, config, root / "keys", files, f"http://{host}:{port}")
