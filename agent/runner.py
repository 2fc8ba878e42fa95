"""``edgeserve agent run``: the event loop, the HTTP (and gRPC) server, the agent and fleet sync.

Imports stay lazy and few (no rich, no click work after parsing) because cold start to ready
is a goal (0.5 s on a small device-class machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from edgeserve.agent.config import AgentConfig

from edgeserve.errors import ConfigError

__all__ = ["run_agent", "run_process", "serve"]

log = logging.getLogger(__name__)


async def serve(config: AgentConfig, *, on_ready: Any = None, shared_port: bool = False) -> None:
    """Run the agent until SIGTERM/SIGINT.

    Args:
        config: the configuration.
        on_ready: called with ``(agent, port)`` once the agent serves (``port``: HTTP's).
        shared_port: one of several serving processes on the port (``SO_REUSEPORT``): the
            port is bound only once the models are loaded, so the kernel never hands a
            connection to a process that is still starting (or restarting).

    Raises:
        ConfigError: the port cannot be bound or fleet sync is missing.
    """
    from edgeserve.agent.http.routes import Api
    from edgeserve.agent.http.server import HttpServer
    from edgeserve.agent.serving.core import Agent

    agent = Agent(config)
    api = Api(agent)
    server = HttpServer(
        api.handle,
        max_body_bytes=config.server.max_body_bytes,
        max_connections=config.server.max_connections,
        idle_timeout_s=config.server.idle_timeout_s,
        header_timeout_s=config.server.header_timeout_s,
        body_timeout_s=config.server.body_timeout_s,
        max_connections_per_peer=config.server.max_connections_per_peer,
        cap_loopback_peers=config.server.cap_loopback_peers,
    )
    _raise_fd_limit(config.server.max_connections)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # not available on Windows, nor off the main thread (an embedding application)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)

    async def listen() -> int:
        try:
            return await server.start(
                config.server.host, config.server.port, reuse_port=shared_port
            )
        except OSError as exc:
            where = f"{config.server.host}:{config.server.port}"
            raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from exc

    # One process alone serves /v2/health/live at once; /v2/health/ready turns 200 when
    # start() finishes.
    port = 0 if shared_port else await listen()
    sync = None
    grpc_server = None
    try:
        if config.server.grpc_port and not shared_port:
            grpc_server = await _start_grpc(agent, config, reuse_port=False)
        await agent.start()
        if shared_port:
            if config.server.grpc_port:
                grpc_server = await _start_grpc(agent, config, reuse_port=True)
            port = await listen()
        if config.fleet is not None:
            sync = _start_sync(agent, config.fleet)
        if on_ready is not None:
            on_ready(agent, port)
        await stop.wait()
    finally:
        if sync is not None:
            await loop.run_in_executor(None, sync.stop)
        if grpc_server is not None:
            await grpc_server.close()
        await server.close()
        await agent.stop()


def _raise_fd_limit(max_connections: int) -> None:
    """Raise the soft open-file limit towards the hard one so ``max_connections`` sockets (plus
    model files, the store and the telemetry buffer) fit; a small default soft limit (1024 on
    many systems) would otherwise make accept() fail before the connection cap is reached."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log.warning(
                "open-file limit %d is below max_connections %d + 256; raise it (ulimit -n)",
                new,
                max_connections,
            )


async def _start_grpc(agent: Any, config: AgentConfig, *, reuse_port: bool) -> Any:
    """Start the gRPC API; its modules (protobuf, hpack) are imported only here."""
    try:
        from edgeserve.agent.grpc.server import GrpcServer
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("hpack", "google"):
            raise ConfigError(
                "[server] grpc_port is set but the gRPC extra is not installed: "
                "pip install 'edgeserve-toolkit[grpc]'"
            ) from exc
        raise
    grpc_server = GrpcServer(agent, config.server)
    host, port = config.server.host, config.server.grpc_port
    try:
        await grpc_server.start(host, port, reuse_port=reuse_port)
    except OSError as exc:
        where = f"{host}:{port}"
        raise ConfigError(f"cannot listen for gRPC on {where}: {exc.strerror or exc}") from exc
    return grpc_server


def _start_sync(agent: Any, fleet: Any) -> Any:
    try:
        from edgeserve.agent.sync import start_sync  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("edgeserve"):
            raise ConfigError(
                "agent.toml has a [fleet] section but fleet sync (edgeserve.agent.sync) is not "
                "available in this build"
            ) from exc
        raise ConfigError(f"fleet sync needs {exc.name}, which is not installed") from exc
    return start_sync(agent, fleet)


def run_agent(config: AgentConfig) -> None:
    """Block serving ``config``: in this process, or with ``[server] processes`` above 1 under
    a supervisor (:mod:`edgeserve.agent.supervisor`) that runs that many serving processes."""
    if config.server.processes > 1:
        from edgeserve.agent.supervisor import supervise

        supervise(config)
        return
    run_process(config)


def run_process(config: AgentConfig, *, shared_port: bool = False) -> None:
    """Block serving ``config`` in this process on uvloop when available (faster), else
    asyncio's loop; prints one ready line on stdout.

    Args:
        config: the configuration.
        shared_port: one of several processes on the port (see :func:`serve`).
    """
    loop_factory = asyncio.new_event_loop
    if config.server.uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass

    def ready(agent: Any, port: int) -> None:
        models = ", ".join(f"{n}:{v}" for n, v in sorted(agent.active_versions().items()))
        grpc = f" grpc {config.server.host}:{config.server.grpc_port}"
        # One parseable line on stdout: tests and scripts wait for it.
        print(
            f"edgeserve agent ready on http://{config.server.host}:{port} models [{models}]"
            + (grpc if config.server.grpc_port else ""),
            flush=True,
        )

    # The loop thread and the runtime worker threads share the GIL; CPython hands it over
    # only every switch interval (5 ms by default), which shows up as a 5 ms p99 tail when a
    # worker finishes while the loop parses JSON. 0.5 ms keeps the handover prompt.
    sys.setswitchinterval(0.0005)
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve(config, on_ready=ready, shared_port=shared_port))
    finally:
        loop.close()
        sys.stdout.flush()
