"""A small HTTP/1.1 server: ``asyncio.Protocol`` + httptools (llhttp), one handler shape.

Chosen by measurement over uvicorn + a raw ASGI app (benchmarks in the README): on this
2-core machine the same JSON echo handler ran at 73.8k req/s (p50 62 µs) here versus 34.6k
req/s (p50 98 µs) under uvicorn, with 8 MB less RSS.

Every request is one :class:`Request` handed to one ``async handler(request) -> Response``
(the single handler shape of starlette's ``types.py``). Requests on a connection are answered
in order (HTTP/1.1 pipelining, RFC 9112 §9.3.2); different connections never wait for each
other.

Hostile clients are bounded while they send, not after: every byte of a request line and headers
is counted as it arrives, complete or not (431 and close past 64 KiB, after h11's
``DEFAULT_MAX_INCOMPLETE_EVENT_SIZE``); a body is counted as it streams (413 past
``max_body_bytes``). Time is bounded like nginx's ``client_header_timeout`` and
``client_body_timeout``: headers must complete within ``header_timeout_s`` of a request's first
byte and a body must keep arriving (408 and close), so trickling one byte at a time holds a
connection for seconds, not forever. At ``max_connections`` the connection that has gone longest
without completing a request is closed to admit the new one, so slow sockets cannot lock
clients out; an optional per-address cap bounds what one peer can hold. ``Upgrade`` (WebSocket,
h2c) and ``CONNECT`` are answered with a 400 naming them, then the connection is closed.
Request paths are percent-decoded once, before routing.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

__all__ = ["HttpServer", "Request", "Response", "error_response"]

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # bytes of request line + headers
_MAX_PIPELINED = 32  # queued requests per connection before reading pauses
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


@dataclass
class Request:
    """One HTTP request; header names are lower-case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    """One HTTP response."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON error body ``{"error": message}`` (Triton's and TF Serving's error shape)."""
    return Response(status, json.dumps({"error": message}).encode(), headers=headers or {})


Handler = Callable[[Request], Awaitable[Response]]


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        import httptools

        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._parse_error = httptools.HttpParserError
        self._upgrade_error = httptools.HttpParserUpgrade
        self._transport: asyncio.Transport | None = None
        self.peer = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        # Between two requests and while a request line + headers arrive, every byte received
        # is counted (complete header or not: httptools buffers a partial one until its line
        # ends), so one endless header cannot grow the process.
        self._in_head = True
        self._head_bytes = 0  # bytes received since the last request completed, while in a head
        self._field_bytes = 0  # bytes of the current request's complete URL and header fields
        self.head_started: float | None = None  # loop time of the request's first byte
        self._body: list[bytes] = []
        self._body_size = 0
        self._queue: deque[tuple[Request | Response, bool]] = deque()
        self.busy = False
        self.closed = False
        self._failing = False
        self.paused = False
        self._task: asyncio.Future | None = None
        self.last = self._loop.time()  # loop time bytes last arrived or a response went out

    # asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._server.admit(self):
            transport.abort()
            self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server.forget(self)

    def data_received(self, data: bytes) -> None:
        if self.closed or self._failing:
            return
        self.last = self._loop.time()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except self._upgrade_error:
            self._fail(400, _upgrade_message(self._headers))
            return
        except self._parse_error as exc:
            # httptools wraps a callback's exception in HttpParserCallbackError (its cause)
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _Reject):
                self._fail(cause.status, cause.message)
            else:
                self._fail(400, f"malformed HTTP request: {exc}")
            return
        if self._in_head and self._head_bytes > MAX_HEADER_BYTES:
            self._fail(431, f"request line and headers over {MAX_HEADER_BYTES} bytes")

    # httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._body_size = b"", {}, [], 0
        self._field_bytes = 0
        self.head_started = self.last

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._field_bytes += len(url)
        if self._field_bytes > MAX_HEADER_BYTES:
            raise _Reject(431, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Complete fields are counted exactly too: one read may carry a whole head over the
        # limit and end it, which the count of bytes received cannot tell from a body.
        self._field_bytes += len(name) + len(value)
        if self._field_bytes > MAX_HEADER_BYTES:
            raise _Reject(431, f"request headers over {MAX_HEADER_BYTES} bytes")
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.head_started = None
        if self._parser.should_upgrade():
            raise _Reject(400, _upgrade_message(self._headers))
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.max_body_bytes:
            raise _Reject(413, f"request body over the {self._server.max_body_bytes} byte limit")
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            raise _Reject(413, f"request body over the {self._server.max_body_bytes} byte limit")
        self._body.append(body)

    def on_message_complete(self) -> None:
        import httptools

        self._in_head = True
        self._head_bytes = 0
        self._server.completed(self)
        url = httptools.parse_url(self._url)
        raw = url.path
        if b"%" in raw:  # decoded once, here; routes never see an escape (RFC 3986 §2.1)
            raw = unquote_to_bytes(raw)
        request = Request(
            method=self._parser.get_method().decode("ascii", "replace"),
            path=raw.decode("utf-8", "replace"),
            query=(url.query or b"").decode("utf-8", "replace"),
            headers=self._headers,
            body=b"".join(self._body),
        )
        self._queue.append((request, self._parser.should_keep_alive()))
        if len(self._queue) > _MAX_PIPELINED and self._transport and not self.paused:
            self._transport.pause_reading()
            self.paused = True
        if not self.busy:
            self._next()

    # deadlines (called by the server's sweep) ------------------------------------------

    def check_deadlines(self, now: float) -> None:
        """Close this connection when a deadline passed (408 for a request under way)."""
        if self.closed or self._failing or self.paused:
            return
        server = self._server
        if self.head_started is not None:
            if now - self.head_started > server.header_timeout_s:
                self._fail(408, f"request headers not complete within {server.header_timeout_s} s")
        elif not self._in_head:
            if now - self.last > server.body_timeout_s:
                self._fail(408, f"no request body bytes for {server.body_timeout_s} s")
        elif not self.busy and now - self.last > server.idle_timeout_s and self._transport:
            # idle keep-alive (nginx's keepalive_timeout): closed without a response
            self._transport.close()
            self.closed = True
            server.forget(self)

    def evict(self) -> None:
        """Drop this connection at once to make room for a new one."""
        self.closed = True
        self._server.forget(self)
        if self._transport is not None:
            self._transport.abort()

    # responses -------------------------------------------------------------------------

    def _next(self) -> None:
        if not self._queue or self.closed:
            self.busy = False
            self.last = self._loop.time()
            return
        self.busy = True
        if self.paused and len(self._queue) <= _MAX_PIPELINED // 2 and self._transport:
            self._transport.resume_reading()
            self.paused = False
        item, keep_alive = self._queue.popleft()
        if isinstance(item, Response):  # an error found while reading: answer, then close
            self._write(item, keep_alive=False)
            self.busy = False
            return
        # keep a reference: the loop holds tasks weakly
        self._task = asyncio.ensure_future(self._serve(item, keep_alive))

    async def _serve(self, request: Request, keep_alive: bool) -> None:
        try:
            response = await self._server.handler(request)
        except Exception:  # the one place an unexpected bug becomes a 500, not a dead socket
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = error_response(500, "internal error")
        self._write(response, keep_alive)
        if keep_alive:
            self._next()
        else:
            self.busy = False

    def _write(self, response: Response, keep_alive: bool) -> None:
        if self.closed or self._transport is None:
            return
        reason = _REASONS.get(response.status, b"Unknown")
        head = [
            b"HTTP/1.1 %d %s\r\n" % (response.status, reason),
            b"content-type: %s\r\n" % response.content_type.encode(),
            b"content-length: %d\r\n" % len(response.body),
        ]
        for name, value in response.headers.items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        self._transport.write(b"".join(head) + response.body)
        if not keep_alive:
            self._transport.close()
            self.closed = True

    def _fail(self, status: int, message: str) -> None:
        # Stop reading; requests already queued are answered first, in order (RFC 9112 §9.3.2)
        self._failing = True
        self.head_started = None
        if self._transport is not None and not self.paused:
            self._transport.pause_reading()
            self.paused = True
        self._queue.append((error_response(status, message), False))
        if not self.busy:
            self._next()


def _upgrade_message(headers: dict[str, str]) -> str:
    wanted = headers.get("upgrade", "")
    what = f"upgrade to {wanted!r}" if wanted else "CONNECT"
    return f"unsupported {what}: this server speaks HTTP/1.1 only"


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpServer:
    """Serve ``handler`` on a TCP port.

    Args:
        handler: the one ``async handler(request) -> Response``.
        max_body_bytes: largest request body (413 above), counted as it streams.
        max_connections: open connections; at the cap the connection that has gone longest
            without completing a request (and has none in progress) is closed for the new one.
        idle_timeout_s: seconds a connection between requests may send nothing.
        header_timeout_s: seconds from a request's first byte until its headers are complete
            (nginx's ``client_header_timeout``); 408 and close after it.
        body_timeout_s: seconds a request body may stop arriving (nginx's
            ``client_body_timeout``); 408 and close after it.
        max_connections_per_peer: open connections from one address (0 = no cap); at the cap
            that address's longest-incomplete connection makes room.
        cap_loopback_peers: apply ``max_connections_per_peer`` to loopback clients too.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int,
        max_connections: int = 1024,
        idle_timeout_s: float = 60.0,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 10.0,
        max_connections_per_peer: int = 0,
        cap_loopback_peers: bool = False,
    ) -> None:
        self.handler = handler
        self.idle_timeout_s = idle_timeout_s
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.cap_loopback_peers = cap_loopback_peers
        # Insertion order is the eviction order: a connection moves to the end each time it
        # completes a request, so the first entries have gone longest without completing one.
        self.connections: dict[_Connection, None] = {}
        self._per_peer: dict[str, int] = {}
        self.evicted = 0  # connections closed to make room, since start
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    # connection bookkeeping (called by _Connection) ------------------------------------

    def admit(self, conn: _Connection) -> bool:
        """Register a new connection, making room at a cap; False when there is none."""
        peer = conn.peer
        capped = self.max_connections_per_peer > 0 and (
            self.cap_loopback_peers or not _is_loopback(peer)
        )
        at_peer_cap = capped and self._per_peer.get(peer, 0) >= self.max_connections_per_peer
        if at_peer_cap and not self._evict(peer):
            return False
        if len(self.connections) >= self.max_connections and not self._evict(None):
            return False
        self.connections[conn] = None
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return True

    def _evict(self, peer: str | None) -> bool:
        for conn in self.connections:
            if not conn.busy and (peer is None or conn.peer == peer):
                conn.evict()
                self.evicted += 1
                return True
        return False

    def completed(self, conn: _Connection) -> None:
        """``conn`` completed a request: it goes to the back of the eviction order."""
        if conn in self.connections:
            del self.connections[conn]
            self.connections[conn] = None

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed (idempotent)."""
        if conn in self.connections:
            del self.connections[conn]
            left = self._per_peer.get(conn.peer, 1) - 1
            if left > 0:
                self._per_peer[conn.peer] = left
            else:
                self._per_peer.pop(conn.peer, None)

    def _sweep(self) -> None:
        # One timer for every connection (not one per connection): deadlines are checked a
        # few times per shortest timeout, so they hold to within a quarter of it.
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.connections):
            conn.check_deadlines(now)
        self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep_interval(self) -> float:
        shortest = min(self.idle_timeout_s, self.header_timeout_s, self.body_timeout_s)
        return min(max(shortest / 4, 0.05), 1.0)

    # lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Bind and start accepting; returns the bound port (useful with port 0).

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024
        )
        self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let requests being handled finish (up to ``grace_s`` seconds), then
        close every connection."""
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            if conn._transport is not None:
                conn._transport.close()
        await self._server.wait_closed()


@functools.lru_cache(maxsize=4096)
def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == ""  # a Unix socket has no address: local
