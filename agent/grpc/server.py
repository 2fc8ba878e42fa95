"""The agent's gRPC server: HTTP/2 on the agent's event loop, its limits, bind address and token.

It serves :class:`~.service.InferenceService` on ``[server] host`` (loopback unless a token is
set, checked with the rest of the config) and ``grpc_port``, over :mod:`.conn`'s HTTP/2
connections, beside and like the HTTP server: the same connection caps and deadlines
(:class:`~edgeserve.agent.http.listener.Listener`), messages over ``max_body_bytes`` refused
(RESOURCE_EXHAUSTED), request metadata capped at 64 KiB like HTTP headers, RPCs in flight at
``max_connections`` (RESOURCE_EXHAUSTED over it), ``grpc-timeout`` honoured
(DEADLINE_EXCEEDED). With a token, every method except ``ServerLive`` and ``ServerReady`` (as
``/v2/health/*`` on REST) needs the metadata ``authorization: Bearer <token>`` and otherwise
answers UNAUTHENTICATED. Because the server is ours, several agent processes can share its port
(``SO_REUSEPORT``) as they share the HTTP port.

The methods and their message types come from ``inference.proto``'s descriptor (protobuf's
generated ``inference_pb2``); a method the service has no handler for answers UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from edgeserve.agent.config import ServerConfig
from edgeserve.agent.grpc import inference_pb2 as pb
from edgeserve.agent.grpc.conn import Connection
from edgeserve.agent.grpc.service import InferenceService, status_code
from edgeserve.agent.grpc.status import RpcError, Status
from edgeserve.agent.grpc.stream import Stream
from edgeserve.agent.http.listener import Listener
from edgeserve.agent.serving.core import Agent
from google.protobuf.message import DecodeError

from edgeserve.errors import EdgeServeError

__all__ = ["GrpcServer"]

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
_OPEN_METHODS = frozenset({f"/{SERVICE}/ServerLive", f"/{SERVICE}/ServerReady"})


@dataclass(frozen=True)
class _Method:
    name: str
    request: Any  # the request message class
    handler: Callable[..., Any] | None
    streaming: bool  # ModelStreamInfer: requests and answers both streamed


def _methods(service: InferenceService) -> dict[str, _Method]:
    """``/package.Service/Method`` -> the method, for every RPC ``inference.proto`` declares."""
    table = {}
    for method in pb.DESCRIPTOR.services_by_name[SERVICE.split(".")[1]].methods:
        if method.client_streaming != method.server_streaming:
            raise TypeError(f"{method.name}: only unary and bidirectional RPCs are served")
        table[f"/{SERVICE}/{method.name}"] = _Method(
            name=method.name,
            request=getattr(pb, method.input_type.name),
            handler=getattr(service, method.name, None),
            streaming=method.client_streaming,
        )
    return table


class GrpcServer(Listener):
    """The agent's gRPC server. ``await start(host, port)``, later ``await close()``."""

    def __init__(self, agent: Agent, config: ServerConfig) -> None:
        super().__init__(
            max_connections=config.max_connections,
            idle_timeout_s=config.idle_timeout_s,
            header_timeout_s=config.header_timeout_s,
            body_timeout_s=config.body_timeout_s,
            max_connections_per_peer=config.max_connections_per_peer,
            cap_loopback_peers=config.cap_loopback_peers,
        )
        self.max_message_bytes = config.max_body_bytes
        self._max_rpcs = config.max_connections
        self._token = config.token.encode() if config.token else None
        self._methods = _methods(InferenceService(agent))
        self.rpcs = 0  # calls being handled

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Bind and start serving; returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        return await self.listen(lambda: Connection(self), host, port, reuse_port=reuse_port)

    # calls (from the connections) ------------------------------------------------------

    def open(self, stream: Stream) -> tuple[Status, str] | None:
        """Whether a new call may run: None, or the status that refuses it."""
        method = self._methods.get(stream.method)
        if method is None or method.handler is None:
            return Status.UNIMPLEMENTED, f"unknown method {stream.method}"
        if (
            self._token is not None
            and stream.method not in _OPEN_METHODS
            and not self._authorized(stream.metadata.get("authorization", ""))
        ):
            return Status.UNAUTHENTICATED, "missing or wrong bearer token"
        if self.rpcs >= self._max_rpcs:
            return Status.RESOURCE_EXHAUSTED, f"{self._max_rpcs} calls in flight already"
        stream.unary = not method.streaming
        return None

    def _authorized(self, value: str) -> bool:
        scheme, _, token = value.partition(" ")
        assert self._token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._token
        )

    def run(self, stream: Stream, message: bytes = b"") -> None:
        """Start the call's handler: a unary one with its request ``message``."""
        method = self._methods[stream.method]
        self.rpcs += 1
        if method.streaming:
            call = self._stream(stream, method)
        else:
            call = self._unary(stream, method, message)
        stream.task = asyncio.ensure_future(self._guarded(stream, call))

    async def _guarded(self, stream: Stream, call: Any) -> None:
        try:
            if stream.timeout_s is None:
                await call
            else:
                await asyncio.wait_for(call, stream.timeout_s)
        except asyncio.CancelledError:  # the client reset the stream or went away
            pass
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            stream.finish(Status.DEADLINE_EXCEEDED, "deadline exceeded")
        except RpcError as exc:
            stream.finish(exc.status, exc.message)
        except EdgeServeError as exc:
            stream.finish(status_code(exc), str(exc))
        except Exception:  # the one place an unexpected bug becomes INTERNAL, not a hang
            log.exception("unhandled error serving %s", stream.method)
            stream.finish(Status.INTERNAL, "internal error")
        finally:
            self.rpcs -= 1

    async def _unary(self, stream: Stream, method: _Method, message: bytes) -> None:
        request = _parsed(method, message)
        assert method.handler is not None
        response = await method.handler(request, stream.metadata)
        stream.reply(response.SerializeToString())

    async def _stream(self, stream: Stream, method: _Method) -> None:
        assert method.handler is not None
        async for response in method.handler(_requests(stream, method), stream.metadata):
            stream.send(response.SerializeToString())
            await stream.drained()
        stream.finish(Status.OK)


async def _requests(stream: Stream, method: _Method) -> AsyncIterator[Any]:
    async for message in stream.requests():
        yield _parsed(method, message)


def _parsed(method: _Method, message: bytes) -> Any:
    try:
        return method.request.FromString(message)
    except DecodeError as exc:
        raise RpcError(
            Status.INVALID_ARGUMENT, f"malformed {method.request.__name__} message: {exc}"
        ) from exc
