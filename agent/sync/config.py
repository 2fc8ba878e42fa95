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

Parsed by :meth:`SyncConfig.from_mapping` into a frozen dataclass under the rules of
:mod:`edgeserve.tables` (unknown keys, wrong types and negative numbers raise
:class:`~edgeserve.errors.ConfigError`); :func:`edgeserve.agent.config.load_config` does so
when ``agent.toml`` is read, so a bad table stops ``agent run`` before anything starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeserve.errors import ConfigError
from edgeserve.mqtt import parse_broker_url
from edgeserve.protocol import ProtocolError, topics
from edgeserve.tables import load_table

__all__ = ["SyncConfig"]


@dataclass(frozen=True)
class SyncConfig:
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
    def from_mapping(cls, table: Mapping[str, Any], file: Path | None = None) -> SyncConfig:
        """Parse the ``[fleet]`` table (of ``file``, named in errors, when given).

        Raises:
            ConfigError: a missing required key, an unknown key, a wrong type or a bad value.
        """
        return load_table(cls, table, "fleet", file=file)
