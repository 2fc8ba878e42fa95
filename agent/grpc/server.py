"""The ``grpc.aio`` server on the agent's event loop: limits, bind address and bearer token.

It serves :class:`~.service.InferenceService` on ``[server] host`` (loopback unless a token is
set, checked with the rest of the config) and ``grpc_port``. Hostile clients are bounded as on
the HTTP side: messages over ``max_body_bytes`` are refused by gRPC itself
(RESOURCE_EXHAUSTED), request metadata is capped at 64 KiB like HTTP headers, connections at
``max_connections``, RPCs in flight at ``max_connections``, and a connection silent for
``idle_timeout_s`` is closed. With a token, every method except ``ServerLive`` and
``ServerReady`` (as ``/v2/health/*`` on REST) needs the metadata ``authorization: Bearer
<token>`` and otherwise answers UNAUTHENTICATED.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from edgeserve.agent.config import ServerConfig
from edgeserve.agent.grpc import inference_pb2_grpc as pb_grpc
from edgeserve.agent.grpc.service import InferenceService
from edgeserve.agent.serving.core import Agent
from grpc import aio

__all__ = ["GrpcServer"]

_SERVICE = "/inference.GRPCInferenceService/"
_OPEN_METHODS = frozenset({f"{_SERVICE}ServerLive", f"{_SERVICE}ServerReady"})
_STREAMING_METHODS = frozenset({f"{_SERVICE}ModelStreamInfer"})
_MAX_METADATA_BYTES = 64 * 1024  # bytes of request metadata, as the HTTP server's header cap


class GrpcServer:
    """The agent's gRPC server. ``await start(host, port)``, later ``await close()``."""

    def __init__(self, agent: Agent, config: ServerConfig) -> None:
        self._agent = agent
        self._config = config
        self._server: aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind and start serving; returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        cfg = self._config
        interceptors = [_TokenCheck(cfg.token)] if cfg.token else []
        server = aio.server(
            interceptors=interceptors,
            maximum_concurrent_rpcs=cfg.max_connections,
            options=[
                ("grpc.max_receive_message_length", cfg.max_body_bytes),
                ("grpc.max_metadata_size", _MAX_METADATA_BYTES),
                ("grpc.max_allowed_incoming_connections", cfg.max_connections),
                ("grpc.max_connection_idle_ms", int(cfg.idle_timeout_s * 1000)),
                # gRPC sets SO_REUSEPORT by default, which would let a second agent share
                # the port silently; a taken port must fail like the HTTP server's bind
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(self._agent), server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        why = f"{address}: in use, or not an address of this machine"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises RuntimeError("Failed to bind ...")
            raise OSError(why) from exc
        if bound == 0:
            raise OSError(why)
        await server.start()
        self._server = server
        return bound

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting RPCs and let running ones finish for up to ``grace_s`` seconds."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None


class _TokenCheck(aio.ServerInterceptor):
    """Bearer-token middleware: a wrong or missing token never reaches a handler."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method in _OPEN_METHODS or self._authorized(handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        if method in _STREAMING_METHODS:
            return grpc.stream_stream_rpc_method_handler(_deny_stream)
        return grpc.unary_unary_rpc_method_handler(_deny)

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    token.strip().encode(), self._token
                )
        return False


async def _deny(request: Any, context: aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


async def _deny_stream(request_iterator: Any, context: aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
