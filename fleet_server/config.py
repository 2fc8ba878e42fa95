"""``fleet.toml``: the fleet server's typed configuration, loaded and validated in one place.

Every key, its default and its unit is listed in the README (section "Fleet server"). Relative
paths are resolved against the directory holding ``fleet.toml`` so that a config moves with its
data. The environment is read in one place only: ``EDGESERVE_FLEET_TOKEN`` overrides the
operator token. Each table is read by :func:`edgeserve.tables.load_table` (the rules every
edgeserve config file shares: types, no negative numbers, unknown keys named).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from edgeserve.errors import ConfigError
from edgeserve.tables import check_keys, load_table, read_toml, table_of

__all__ = ["BrokerConfig", "FleetConfig", "RolloutDefaults", "ServerConfig", "load_config"]

_TOPIC_WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."


def _check_word(value: str, what: str) -> str:
    if not value or any(c not in _TOPIC_WORD for c in value):
        raise ConfigError(f"{what}: {value!r} must be letters, digits, '_', '-' or '.'")
    return value


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: the HTTP side and where data lives.

    Attributes:
        host: address the HTTP API binds (loopback by default; put a TLS proxy in front).
        port: TCP port of the HTTP API.
        public_url: base URL devices use to download artifacts; default ``http://host:port``.
        token: operator bearer token for ``/api/v1``; required.
        data_dir: artifacts (``<data_dir>/artifacts``) and the default SQLite file.
        database: ``sqlite:///path`` (default ``<data_dir>/fleet.db``) or ``postgresql://...``.
        max_upload_bytes: largest release tar accepted.
        max_request_bytes: largest JSON request body accepted.
    """

    token: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8700
    public_url: str = ""
    database: str = ""
    max_upload_bytes: int = 1024**3  # bytes
    max_request_bytes: int = 1024**2  # bytes

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ConfigError("[server] token: must be at least 16 characters")
        if not 0 < self.port < 65536:
            raise ConfigError(f"[server] port: {self.port} is not a TCP port")
        if self.max_upload_bytes <= 0 or self.max_request_bytes <= 0:
            raise ConfigError("[server] max_upload_bytes/max_request_bytes must be positive")

    @property
    def base_url(self) -> str:
        """Where devices download artifacts from, without a trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def database_url(self) -> str:
        """The store URL, defaulting to SQLite in ``data_dir``."""
        return self.database or f"sqlite:///{self.data_dir / 'fleet.db'}"


@dataclass(frozen=True)
class BrokerConfig:
    """``[broker]``: the MQTT connection of the server.

    Attributes:
        url: ``mqtt://host:port``.
        username: the server's broker user (full access under ``prefix``); empty for an
            anonymous broker.
        password: its password (or ``password_file``); required with a username.
        prefix: topic prefix (default ``es``).
        fleet: fleet name, the second topic level.
        client_id: MQTT client id of this server replica.
        share_group: shared-subscription group (``$share/<group>/...``, MQTT 5.0 §4.8.2) so
            that several replicas split ingest. Empty (default) subscribes plainly, which also
            replays retained reported/presence messages on reconnect (brokers do not send
            retained messages to shared subscriptions, MQTT 5.0 §3.8.4).
        keepalive_s: MQTT keep alive, seconds.
        max_payload_bytes: inbound messages above this are dropped and counted.
    """

    url: str = "mqtt://127.0.0.1:1883"
    username: str = "fleet-server"
    password: str = ""
    prefix: str = "es"
    fleet: str = "default"
    client_id: str = "fleet-server"
    share_group: str = ""
    keepalive_s: int = 30  # seconds
    max_payload_bytes: int = 256 * 1024  # bytes

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise ConfigError(f"[broker] url: {self.url!r} is not mqtt://host:port")
        _check_word(self.prefix, "[broker] prefix")
        _check_word(self.fleet, "[broker] fleet")
        if self.share_group:
            _check_word(self.share_group, "[broker] share_group")
        if self.keepalive_s < 5 or self.max_payload_bytes < 1024:
            raise ConfigError("[broker] keepalive_s >= 5 and max_payload_bytes >= 1024 required")
        if self.username and not self.password:
            # an empty password can never log in to a broker with a password file: say so now
            # instead of retrying "not authorised" forever
            raise ConfigError(
                f"[broker] password: empty for user {self.username!r}; set password or "
                'password_file (`edgeserve fleet init` generates one), or username = "" for '
                "an anonymous broker"
            )


@dataclass(frozen=True)
class RolloutDefaults:
    """``[rollouts]``: controller timing and defaults for ``rollout start``.

    Attributes:
        tick_s: controller period, seconds (it also wakes on every reported-state batch).
        desired_ttl_s: validity of a signed desired-state document; re-signed at half-life.
        install_timeout_s: default install timeout per device, seconds.
        telemetry_retention_s: telemetry windows older than this are pruned.
    """

    tick_s: float = 1.0  # seconds
    desired_ttl_s: int = 7 * 24 * 3600  # seconds
    install_timeout_s: int = 600  # seconds
    telemetry_retention_s: int = 7 * 24 * 3600  # seconds

    def __post_init__(self) -> None:
        if self.tick_s <= 0 or self.desired_ttl_s < 60 or self.install_timeout_s <= 0:
            raise ConfigError("[rollouts] tick_s > 0, desired_ttl_s >= 60, install_timeout_s > 0")


@dataclass(frozen=True)
class FleetConfig:
    """The whole ``fleet.toml``.

    Attributes:
        server: ``[server]``.
        broker: ``[broker]``.
        rollouts: ``[rollouts]``.
        fleet_key: ``[keys] fleet_key``: Ed25519 key that signs desired state.
        keyring: ``[keys] keyring``: the signed keyring served to devices.
    """

    server: ServerConfig
    fleet_key: Path
    keyring: Path
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    rollouts: RolloutDefaults = field(default_factory=RolloutDefaults)


def _read_secret(sec: dict[str, Any], key: str, base: Path, where: str) -> str:
    file_key = f"{key}_file"
    if file_key in sec:
        path = base / str(sec.pop(file_key))
        try:
            sec[key] = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{where} {file_key}: cannot read {path}: {exc.strerror}") from exc
    return str(sec.get(key, ""))


def load_config(path: str | os.PathLike[str]) -> FleetConfig:
    """Read and validate ``fleet.toml``.

    Args:
        path: the file.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: missing file, bad TOML, unknown keys, wrong types or values.
    """
    file = Path(path)
    doc = read_toml(file)
    base = file.resolve().parent
    check_keys(doc, ("server", "broker", "rollouts", "keys"), "top level", file)
    server = table_of(doc, "server", file)
    _read_secret(server, "token", base, f"{file}: [server]")
    server["token"] = os.environ.get("EDGESERVE_FLEET_TOKEN", server.get("token", ""))
    server.setdefault("data_dir", "fleet-data")
    broker = table_of(doc, "broker", file)
    _read_secret(broker, "password", base, f"{file}: [broker]")
    keys = table_of(doc, "keys", file)
    check_keys(keys, ("fleet_key", "keyring"), "[keys]", file)
    return FleetConfig(
        server=load_table(ServerConfig, server, "server", file=file, base_dir=base),
        broker=load_table(BrokerConfig, broker, "broker", file=file),
        rollouts=load_table(
            RolloutDefaults, table_of(doc, "rollouts", file), "rollouts", file=file
        ),
        fleet_key=base / str(keys.get("fleet_key", "keys/fleet.key")),
        keyring=base / str(keys.get("keyring", "keys/keyring.json")),
    )
