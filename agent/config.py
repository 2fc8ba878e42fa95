"""The agent's configuration: ``agent.toml`` loaded in one place into frozen dataclasses.

Every key, its default and its unit is listed in the README (section "agent.toml"). Command-line
flags override the file through :func:`load_config`'s ``overrides``. Tables are read under the
rules shared by every edgeserve config file (:mod:`edgeserve.tables`); the ``[fleet]`` table is
validated here too (:class:`~edgeserve.agent.sync.config.SyncConfig`), so a bad fleet key
stops ``agent run`` at start.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeserve.agent.names import is_label, is_model_name

from edgeserve.errors import ConfigError
from edgeserve.tables import check_keys, load_table, read_toml, typed_value

__all__ = [
    "AgentConfig",
    "BatchingConfig",
    "ModelConfig",
    "RuntimeConfig",
    "ServerConfig",
    "SplitConfig",
    "TelemetryConfig",
    "load_config",
]

POLICIES = ("latest", "pinned", "all")


@dataclass(frozen=True)
class ServerConfig:
    """HTTP and gRPC server settings.

    Attributes:
        host: address to bind (HTTP and gRPC); loopback by default, anything else needs
            ``token``.
        port: TCP port (0 = any free port, printed on start).
        grpc_port: TCP port of the gRPC API (OIP v2 ``inference.GRPCInferenceService``);
            0 = no gRPC server (the default; needs the ``grpc`` extra).
        token: bearer token clients must send (``Authorization: Bearer ...``, gRPC metadata
            ``authorization``); "" = none.
        max_body_bytes: largest request body accepted, in bytes (413 above; gRPC messages
            above it are refused with RESOURCE_EXHAUSTED).
        max_connections: open connections at once; at the cap the connection that has gone
            longest without completing a request is closed to admit the new one (gRPC: also
            the RPCs in flight at once; more get RESOURCE_EXHAUSTED).
        max_connections_per_peer: open connections from one address; 0 = no cap. Loopback
            clients are exempt unless ``cap_loopback_peers``.
        cap_loopback_peers: apply ``max_connections_per_peer`` to loopback clients too.
        idle_timeout_s: seconds a connection between requests may send nothing before it is
            closed.
        header_timeout_s: seconds from a request's first byte until its headers are complete;
            408 and close after it.
        body_timeout_s: seconds a request body may stop arriving; 408 and close after it.
        uvloop: use uvloop's event loop when it is installed.
        processes: serving processes sharing ``port`` (``SO_REUSEPORT``), each with its own
            runtime, batcher and event loop, under one supervisor that restarts a process that
            dies; they share the gRPC port too, and only the first runs fleet sync. 1 = one
            process, no supervisor.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 0
    token: str = ""
    max_body_bytes: int = 64 * 1024 * 1024  # bytes
    max_connections: int = 1024
    max_connections_per_peer: int = 256
    cap_loopback_peers: bool = False
    idle_timeout_s: float = 60.0  # seconds
    header_timeout_s: float = 10.0  # seconds
    body_timeout_s: float = 10.0  # seconds
    uvloop: bool = True
    processes: int = 1


@dataclass(frozen=True)
class RuntimeConfig:
    """How models run.

    Attributes:
        providers: ONNX Runtime execution providers to try in order; () = the bundle's order.
        threads: intra-op threads per model (ORT) or interpreter threads (TFLite); 0 = the
            runtime's default (all cores). 1 by default: on 2-4 core devices the HTTP loop
            needs a core, and batching gives more throughput than intra-op threads for small
            models (benchmarks/agent.py: 8.0k vs 4.3k req/s at 32 connections).
        workers: worker threads for blocking runtime calls, shared by all models.
        warmup_runs: inference runs before a model version reports ready.
        spin: let ONNX Runtime's intra-op threads busy-wait between runs; off by default so
            idle pool threads leave the CPU to the HTTP loop (matters on 2-4 core devices).
    """

    providers: tuple[str, ...] = ()
    threads: int = 1
    workers: int = 2
    warmup_runs: int = 2
    spin: bool = False


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching per model version (Triton's ``dynamic_batching`` settings).

    Attributes:
        enabled: batch requests together (always off for models without a batch dimension).
        max_batch_size: most rows in one execution.
        max_queue_delay_us: microseconds to wait for more requests before running a partial
            batch; 0 runs whatever is queued as soon as an execution slot is free.
        max_queue_size: requests waiting per model version; more are refused with 503.
        timeout_ms: per-request limit in milliseconds from arrival to result (503 after it).
        instances: executions of one model version that may run at once.
    """

    enabled: bool = True
    max_batch_size: int = 32
    max_queue_delay_us: int = 0
    max_queue_size: int = 1024
    timeout_ms: int = 10_000
    instances: int = 1


@dataclass(frozen=True)
class TelemetryConfig:
    """Periodic summaries into the on-disk buffer.

    Attributes:
        interval_s: seconds between per-model-version summaries.
        max_bytes: size bound of the buffer in bytes; the oldest records go first.
        path: buffer file; "" = ``<state>/telemetry.jsonl``.
    """

    interval_s: float = 60.0
    max_bytes: int = 10 * 1024 * 1024  # bytes
    path: str = ""


@dataclass(frozen=True)
class ModelConfig:
    """Per-model settings under ``[models.<name>]``.

    Attributes:
        policy: ``latest`` (serve the active version), ``pinned`` (serve ``version`` only,
            whatever is activated) or ``all`` (every installed version is addressable).
        version: the pinned version (policy ``pinned``).
        labels: label -> version (``stable = 3``), merged over labels kept in the store.
        batching: this model's batching settings.
        providers: ONNX Runtime provider override for this model; () = [runtime].
        threads: runtime threads for this model; 0 = [runtime].
    """

    policy: str = "latest"
    version: int | None = None
    labels: Mapping[str, int] = field(default_factory=dict)
    batching: BatchingConfig = BatchingConfig()
    providers: tuple[str, ...] = ()
    threads: int = 0


@dataclass(frozen=True)
class SplitConfig:
    """An on-device A/B alias under ``[splits.<alias>]``.

    Attributes:
        model: the model whose versions are split; defaults to the alias itself.
        a: version of arm A.
        b: version of arm B.
        weight_b: share of requests for arm B, in [0, 1].
    """

    model: str
    a: int
    b: int
    weight_b: float


@dataclass(frozen=True)
class AgentConfig:
    """The whole agent configuration.

    Attributes:
        state_dir: the agent's state (model store, telemetry buffer, batch journals).
        key_header: request header whose value makes A/B assignment sticky.
        poll_interval_s: seconds between checks for store changes made by other processes.
        fleet: the raw ``[fleet]`` table, handed to fleet sync; None = no fleet sync.
    """

    state_dir: Path = Path("/var/lib/edgeserve")
    server: ServerConfig = ServerConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    batching: BatchingConfig = BatchingConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    splits: Mapping[str, SplitConfig] = field(default_factory=dict)
    key_header: str = "x-request-key"
    poll_interval_s: float = 1.0
    fleet: Mapping[str, Any] | None = None

    def model(self, name: str) -> ModelConfig:
        """This model's settings, or the defaults built from the global sections."""
        found = self.models.get(name)
        return found if found is not None else ModelConfig(batching=self.batching)

    @property
    def telemetry_path(self) -> Path:
        """Where the telemetry buffer lives."""
        return (
            Path(self.telemetry.path) if self.telemetry.path else self.state_dir / "telemetry.jsonl"
        )


def _check_batching(cfg: BatchingConfig, where: str) -> None:
    if cfg.max_batch_size < 1:
        raise ConfigError(f"[{where}] max_batch_size: must be at least 1")
    if cfg.max_queue_size < 1:
        raise ConfigError(f"[{where}] max_queue_size: must be at least 1")
    if cfg.instances < 1:
        raise ConfigError(f"[{where}] instances: must be at least 1")
    if cfg.timeout_ms < 1:
        raise ConfigError(f"[{where}] timeout_ms: must be at least 1")


def _prefix(file: Path | None) -> str:
    return f"{file}: " if file else ""


def _model(
    name: str, table: Mapping[str, Any], batching: BatchingConfig, file: Path | None
) -> ModelConfig:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[models.{name}]: must be a table")
    if not is_model_name(name):
        raise ConfigError(f"[models.{name}]: not a model name (letters, digits, '_', '.', '-')")
    table = dict(table)
    policy = table.pop("policy", "latest")
    if policy not in POLICIES:
        raise ConfigError(f"[models.{name}] policy: must be one of {', '.join(POLICIES)}")
    version = table.pop("version", None)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ConfigError(f"[models.{name}] version: must be a positive integer")
    if policy == "pinned" and version is None:
        raise ConfigError(f"[models.{name}]: policy 'pinned' needs version = N")
    labels = table.pop("labels", {})
    if not isinstance(labels, Mapping) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in labels.values()
    ):
        raise ConfigError(f"[models.{name}] labels: must map label = positive version")
    if not all(is_label(label) for label in labels):
        raise ConfigError(f"[models.{name}] labels: a label is letters, digits, '-', '_'")
    where = f"{_prefix(file)}[models.{name}]"
    providers = typed_value(table.pop("providers", []), tuple[str, ...], f"{where} providers")
    threads = typed_value(table.pop("threads", 0), int, f"{where} threads")
    model_batching = load_table(BatchingConfig, table, f"models.{name}", file=file, base=batching)
    _check_batching(model_batching, f"models.{name}")
    return ModelConfig(policy, version, dict(labels), model_batching, providers, threads)


def _split(alias: str, table: Mapping[str, Any]) -> SplitConfig:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[splits.{alias}]: must be a table")
    if not is_model_name(alias):
        raise ConfigError(f"[splits.{alias}]: an alias is a model name (letters, digits, '_.-')")
    unknown = set(table) - {"model", "a", "b", "weight_b"}
    if unknown:
        raise ConfigError(f"[splits.{alias}]: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        model = str(table.get("model", alias))
        a, b, weight = int(table["a"]), int(table["b"]), float(table["weight_b"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"[splits.{alias}]: needs integer a, b and a number weight_b") from exc
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"[splits.{alias}] weight_b: must be between 0 and 1")
    return SplitConfig(model, a, b, weight)


def load_config(
    path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> AgentConfig:
    """Load ``agent.toml`` (or the defaults) and apply command-line overrides.

    Args:
        path: the TOML file, or None for the defaults.
        overrides: dotted keys from CLI flags, e.g. ``{"server.port": 9000, "state_dir": p}``;
            None values are ignored (flag not given).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: unknown keys, wrong types, or a non-local bind without a token.
    """
    raw: dict[str, Any] = read_toml(path) if path is not None else {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        target = raw.setdefault(section, {}) if section else raw
        target[key] = list(value) if isinstance(value, tuple) else value
    agent_keys = {"state_dir", "key_header", "poll_interval_s"}
    sections = {"server", "runtime", "batching", "telemetry", "models", "splits", "fleet"}
    check_keys(raw, sorted(agent_keys | sections), "agent config", path)
    server = load_table(ServerConfig, raw.get("server", {}), "server", file=path)
    runtime = load_table(RuntimeConfig, raw.get("runtime", {}), "runtime", file=path)
    batching = load_table(BatchingConfig, raw.get("batching", {}), "batching", file=path)
    _check_batching(batching, "batching")
    telemetry = load_table(TelemetryConfig, raw.get("telemetry", {}), "telemetry", file=path)
    if telemetry.interval_s <= 0:
        raise ConfigError("[telemetry] interval_s: must be positive")
    if runtime.workers < 1:
        raise ConfigError("[runtime] workers: must be at least 1")
    for key in ("idle_timeout_s", "header_timeout_s", "body_timeout_s"):
        if getattr(server, key) <= 0:
            raise ConfigError(f"[server] {key}: must be positive")
    if server.processes < 1:
        raise ConfigError("[server] processes: must be at least 1")
    if server.max_connections < 1:
        raise ConfigError("[server] max_connections: must be at least 1")
    if server.port > 65535:
        raise ConfigError("[server] port: must be at most 65535")
    if server.grpc_port > 65535:
        raise ConfigError("[server] grpc_port: must be at most 65535")
    if not _is_loopback(server.host) and not server.token:
        raise ConfigError(
            f"[server] host {server.host!r} is not a loopback address: set a bearer token "
            "([server] token or --token) before exposing the agent"
        )
    models = {n: _model(n, t, batching, path) for n, t in raw.get("models", {}).items()}
    splits = {a: _split(a, t) for a, t in raw.get("splits", {}).items()}
    fleet = raw.get("fleet")
    if fleet is not None:
        # imported here: the broker URL check needs the MQTT client, which only a device in
        # a fleet installs
        from edgeserve.agent.sync.config import SyncConfig

        SyncConfig.from_mapping(fleet, file=path)
    state_dir = raw.get("state_dir", str(AgentConfig.state_dir))
    if not isinstance(state_dir, (str, Path)):
        raise ConfigError("state_dir: must be a path")
    key_header = raw.get("key_header", "x-request-key")
    if not isinstance(key_header, str) or not key_header:
        raise ConfigError("key_header: must be a header name")
    poll = typed_value(raw.get("poll_interval_s", 1.0), float, "poll_interval_s")
    return AgentConfig(
        state_dir=Path(state_dir),
        server=server,
        runtime=runtime,
        batching=batching,
        telemetry=telemetry,
        models=models,
        splits=splits,
        key_header=key_header.lower(),
        poll_interval_s=poll,
        fleet=dict(fleet) if fleet is not None else None,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
