"""One HTTP/1.1 connection of :class:`~.server.HttpServer`: the ``asyncio.Protocol`` fed to
httptools (llhttp), the request and response types, and the per-connection limits.

Every byte of a request line and headers is counted as it arrives, complete or not: httptools
keeps a partial header in memory until its line ends, so the count must come before the parser
(431 and close past :data:`MAX_HEADER_BYTES`).
Deadlines are checked by the server's sweep (:meth:`Connection.check_deadlines`). Requests on a
connection are answered in order (RFC 9112 §9.3.2), an error found while reading included.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

if TYPE_CHECKING:
    from edgeserve.agent.http.server import HttpServer

__all__ = ["MAX_HEADER_BYTES", "Connection", "Handler", "Request", "Response", "error_response"]

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


class Connection(asyncio.Protocol):
    """One client connection (created by the server for each accepted socket)."""

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
            if self.head_started is None:  # any byte starts a head (bare CRLFs included)
                self.head_started = self.last
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

    def close(self) -> None:
        """Close after what is already written (the server is stopping)."""
        if self._transport is not None:
            self._transport.close()

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
