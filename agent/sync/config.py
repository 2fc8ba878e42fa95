"""The ``[fleet]`` section of ``agent.toml``: how a device reaches its fleet.

Example::

    [fleet]
    broker = "mqtt://fleet.example:1883"   # MQTT broker URL (mqtt://host:port)
    fleet = "default"                      # fleet name (topic level)
    device = "pi-kitchen-01"               # device id = MQTT client id = username by default
    username = "pi-kitchen-01"             # broker username ("" = the device id)
    password = "..."                       # broker password (from `edgeserve fleet device add`)
    prefix = "es/"                         # topic prefix, ends with "/"
    trust_anchor = "/etc/edgeserve/root.json"  # root keys pinned at install (required)
    keyring = "/etc/edgeserve/keyring.json"    # first keyring ("" = wait for one in desired)
    server_url = "http://fleet.example:8080"   # fleet server; artifact /paths resolve here
    keepalive_s = 30                       # MQTT keep alive, seconds (Last Will after ~1.5x)
    clock_slack_s = 300                    # tolerated clock error for expiry checks, seconds
    max_download_bytes = 2147483648        # refuse artifacts larger than this, bytes
    download_retries = 5                   # attempts per download (resumed with Range)
    download_timeout_s = 30                # connect/read timeout per HTTP request, seconds
    install_attempts = 3                   # tries for a retryable (FAILED) install per desired seq
    retry_backoff_s = 2                    # first retry delay, doubled each time, seconds
    telemetry_interval_s = 10              # how often buffered telemetry is published, seconds
    telemetry_batch = 200                  # records per telemetry message
    warmup_timeout_s = 120                 # max seconds for activation + health check
    prune = true                           # after an install keep only active + previous (+ A/B)
    tls_ca = ""                            # CA file for mqtts:// brokers ("" = system CAs)
    tls_cert = ""                          # client certificate (identity by certificate)
    tls_key = ""                           # its private key

Parsed by :meth:`FleetConfig.from_mapping` into a frozen dataclass; unknown keys and wrong types
raise :class:`~edgeserve.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgeserve.errors import ConfigError
from edgeserve.mqtt import parse_broker_url
from edgeserve.protocol import ProtocolError, topics

__all__ = ["FleetConfig"]


@dataclass(frozen=True)
class FleetConfig:
    """Validated ``[fleet]`` settings; see the module docstring for every key and unit."""

    broker: str
    device: str
    trust_anchor: Path
    fleet: str = "default"
    username: str = ""
    password: str = ""
    prefix: str = "es/"
    keyring: Path | None = None
    server_url: str = ""
    keepalive_s: int = 30
    clock_slack_s: float = 300.0
    max_download_bytes: int = 2 * 1024**3  # bytes
    download_retries: int = 5
    download_timeout_s: float = 30.0
    install_attempts: int = 3
    retry_backoff_s: float = 2.0
    telemetry_interval_s: float = 10.0
    telemetry_batch: int = 200
    warmup_timeout_s: float = 120.0
    prune: bool = True
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def __post_init__(self) -> None:
        parse_broker_url(self.broker)
        try:
            topics(self.prefix, self.fleet, self.device)
        except ProtocolError as exc:
            raise ConfigError(f"[fleet]: {exc}") from exc
        for name in (
            "keepalive_s",
            "max_download_bytes",
            "download_retries",
            "install_attempts",
            "telemetry_batch",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"[fleet] {name}: must be at least 1")
        for name in ("download_timeout_s", "telemetry_interval_s", "warmup_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[fleet] {name}: must be positive")
        if self.clock_slack_s < 0 or self.retry_backoff_s < 0:
            raise ConfigError("[fleet] clock_slack_s and retry_backoff_s must not be negative")

    @property
    def mqtt_username(self) -> str:
        """The broker username (the device id unless set)."""
        return self.username or self.device

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> FleetConfig:
        """Parse the ``[fleet]`` table.

        Raises:
            ConfigError: a missing required key, an unknown key or a wrong type.
        """
        if not isinstance(table, Mapping):
            raise ConfigError("[fleet]: must be a table")
        known = {f.name: f for f in fields(cls)}
        unknown = set(table) - set(known)
        if unknown:
            raise ConfigError(f"[fleet]: unknown key(s) {sorted(unknown)}")
        for required in ("broker", "device", "trust_anchor"):
            if not table.get(required):
                raise ConfigError(f"[fleet]: {required!r} is required")
        values: dict[str, Any] = {}
        for key, value in table.items():
            values[key] = _coerce(key, value, cls.__dataclass_fields__[key].type)
        return cls(**values)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    where = f"[fleet] {key}"
    kind = str(kind)
    if key in ("trust_anchor", "keyring"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a path string")
        return Path(value) if value else None
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string")
    return value
