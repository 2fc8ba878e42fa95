"""One HTTP/2 connection of :class:`~.server.GrpcServer`: frames in, gRPC calls out.

The ``asyncio.Protocol`` parses frames as they arrive, decodes header blocks
(:class:`~.h2.HeaderDecoder`), cuts each stream's DATA into gRPC messages (a 1-byte
compressed flag and a 4-byte length before each) and hands every call to the server as a
:class:`Stream`, which the server answers through :meth:`Stream.reply` (a unary answer:
headers, message and trailers in one write), :meth:`Stream.send` and :meth:`Stream.finish`.

Limits, so that one client cannot grow the process: a message over the server's
``max_message_bytes`` ends its call with RESOURCE_EXHAUSTED as soon as its length prefix
arrives; a header block over 64 KiB (or a header list over it once decoded) is a connection
error; at most :data:`MAX_STREAMS` calls per connection (more are refused with
REFUSED_STREAM, as RFC 9113 §5.1.2 has it); the receive windows are returned only while the
connection holds less than ``max_message_bytes`` of unconsumed request bytes, so a client that
outruns the server is stopped by flow control; a client that sends past the windows it was
given is a FLOW_CONTROL_ERROR. Deadlines, checked by the server's sweep: the preface and every
header block within ``header_timeout_s``, a unary request's messages must keep arriving
(``body_timeout_s``), and a connection without calls is closed after ``idle_timeout_s``. A
streaming call (``ModelStreamInfer``) may stay open while its connection lives, as with grpcio.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import hpack
from edgeserve.agent.grpc import h2
from edgeserve.agent.grpc.status import Status

if TYPE_CHECKING:
    from edgeserve.agent.grpc.server import GrpcServer

__all__ = ["MAX_HEADER_BYTES", "MAX_STREAMS", "Connection", "Stream"]

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # bytes of one header block, encoded or decoded
MAX_STREAMS = 100  # calls in flight per connection (SETTINGS_MAX_CONCURRENT_STREAMS)
STREAM_WINDOW = 1 << 20  # bytes each call may send before its window is returned
CONNECTION_WINDOW = 16 << 20  # bytes all of a connection's calls may send before that
_MAX_DETAIL = 2048  # characters of an error message sent in grpc-message
_PING_FLOOD = 1000  # PINGs or SETTINGS without a request in between: a flood (ENHANCE_YOUR_CALM)

_RESPONSE_HEADERS = b"\x88" + h2.literal(b"content-type", b"application/grpc")  # :status 200
_OK_TRAILERS = h2.literal(b"grpc-status", b"0")
_SERVER_PREFACE = h2.settings(
    {
        h2.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
        h2.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        h2.MAX_HEADER_LIST_SIZE: MAX_HEADER_BYTES,
    }
) + h2.window_update(0, CONNECTION_WINDOW - h2.DEFAULT_WINDOW)
_HEAD = struct.Struct(">HBBBL")
_PREFIX = struct.Struct(">BL")  # a gRPC message's compressed flag and length
_U32 = struct.Struct(">L")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class Stream:
    """One gRPC call on a connection: its request head, its messages, and its answer."""

    __slots__ = (
        "_conn",
        "buffer",
        "done",
        "ended",
        "headers_sent",
        "id",
        "inbox",
        "last",
        "messages",
        "metadata",
        "method",
        "out_window",
        "pending",
        "recv_unacked",
        "recv_window",
        "task",
        "timeout_s",
        "trailers",
        "unary",
    )

    def __init__(self, conn: Connection, stream_id: int, out_window: int) -> None:
        self._conn = conn
        self.id = stream_id
        self.method = ""  # the :path, e.g. /inference.GRPCInferenceService/ModelInfer
        self.metadata: dict[str, str] = {}  # request metadata, lower-case keys (first wins)
        self.timeout_s: float | None = None  # grpc-timeout
        self.unary = True
        self.buffer = bytearray()  # request bytes not yet cut into messages
        self.messages: list[bytes] = []  # a unary call's request messages
        self.inbox: deque[bytes | None] | None = None  # a streaming call's, None = end
        self.ended = False  # the client half-closed (END_STREAM)
        self.done = False  # trailers written or the stream reset
        self.headers_sent = False
        self.out_window = out_window
        self.recv_window = STREAM_WINDOW
        self.recv_unacked = 0
        self.pending = bytearray()  # DATA payload waiting for flow-control window
        self.trailers: bytes | None = None  # written once ``pending`` is out
        self.task: asyncio.Future | None = None
        self.last = conn.loop.time()

    # the answer (called by the server) -------------------------------------------------

    def reply(self, message: bytes) -> None:
        """Answer a unary call: headers, ``message`` and OK trailers, in one write when the
        windows allow."""
        self._queue(message)
        self.trailers = _OK_TRAILERS
        self._conn.flush(self)

    def send(self, message: bytes) -> None:
        """Send one response message of a streaming call."""
        self._queue(message)
        self._conn.flush(self)

    def finish(self, status: Status, message: str = "") -> None:
        """End the call with ``status`` (and its message) in the trailers."""
        if self.done or self.trailers is not None:
            return
        self.trailers = _trailers(status, message)
        self._conn.flush(self)

    async def requests(self) -> AsyncIterator[bytes]:
        """A streaming call's request messages as they arrive, until the client half-closes."""
        inbox = self.inbox
        assert inbox is not None
        while True:
            while not inbox:
                if self.done:
                    return
                waiter = self._conn.loop.create_future()
                self._conn.waiters[self.id] = waiter
                await waiter
            message = inbox.popleft()
            if message is None:
                return
            self._conn.consumed(self, len(message))
            yield message

    def _queue(self, message: bytes) -> None:
        if self.done or self.trailers is not None:
            return
        self.pending += _PREFIX.pack(0, len(message))
        self.pending += message


def _trailers(status: Status, message: str) -> bytes:
    block = h2.literal(b"grpc-status", b"%d" % status)
    if message:
        block += h2.literal(b"grpc-message", _percent_encoded(message[:_MAX_DETAIL]))
    return block


def _percent_encoded(text: str) -> bytes:
    """grpc-message's encoding: UTF-8, bytes outside printable ASCII and ``%`` as ``%XX``."""
    return b"".join(
        bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in text.encode()
    )


def _timeout(value: str) -> float | None:
    """grpc-timeout (``1-8 digits`` then a unit) in seconds; None when malformed."""
    digits, unit = value[:-1], value[-1:]
    if not (0 < len(digits) <= 8 and digits.isdigit() and unit in _TIMEOUT_UNITS):
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Connection(asyncio.Protocol):
    """One client connection (created by the server for each accepted socket)."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        self.loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.peer = ""
        self._buf = bytearray()
        self._preface = False  # the client preface has arrived
        self._decoder = h2.HeaderDecoder(MAX_HEADER_BYTES)
        self._block: bytearray | None = None  # a header block awaiting CONTINUATION frames
        self._block_stream = 0
        self._block_flags = 0
        self._block_started = 0.0
        self.streams: dict[int, Stream] = {}
        self.waiters: dict[int, asyncio.Future] = {}
        self._last_id = 0  # the highest stream id the client opened
        self._peer_window = h2.DEFAULT_WINDOW  # the client's SETTINGS_INITIAL_WINDOW_SIZE
        self._peer_frame = h2.DEFAULT_FRAME_SIZE  # its SETTINGS_MAX_FRAME_SIZE
        self._send_window = h2.DEFAULT_WINDOW  # the connection's window to send in
        self._recv_window = CONNECTION_WINDOW
        self._recv_unacked = 0
        self._held = 0  # request bytes received and not yet consumed, all streams
        self._control = 0  # PINGs and SETTINGS since the last request
        self._going_away = False  # no new calls (the client's GOAWAY, or ours)
        self._goaway_sent = False
        self._stream_due = False  # a stream's window is due to be returned
        self.closed = False
        self.started = self.loop.time()
        self.last = self.started

    @property
    def busy(self) -> bool:
        """A call is in progress (the connection is then never evicted)."""
        return bool(self.streams)

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
        for stream in list(self.streams.values()):
            self._drop(stream)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last = self.loop.time()
        buf = self._buf
        buf += data
        try:
            if not self._preface:
                if len(buf) < len(h2.CLIENT_PREFACE):
                    if not h2.CLIENT_PREFACE.startswith(bytes(buf)):
                        self._not_http2()
                    return
                if not buf.startswith(h2.CLIENT_PREFACE):
                    self._not_http2()
                    return
                del buf[: len(h2.CLIENT_PREFACE)]
                self._preface = True
                # our preface, once the client's shows it speaks HTTP/2 (RFC 9113 §3.4)
                self._write(_SERVER_PREFACE)
            self._frames()
            self._return_window()
        except _ConnectionError as exc:
            self._fail(exc.code, str(exc))
        except Exception:  # a bug must close this connection, not leave it stuck
            log.exception("gRPC connection from %s failed", self.peer or "local")
            self._fail(h2.INTERNAL_ERROR, "internal error")

    def _frames(self) -> None:
        buf = self._buf
        start = 0
        end = len(buf)
        try:
            while end - start >= 9 and not self.closed:
                high, low, kind, flags, stream_id = _HEAD.unpack_from(buf, start)
                length = (high << 8) | low
                if length > h2.DEFAULT_FRAME_SIZE:
                    raise _ConnectionError(h2.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if end - start < 9 + length:
                    break
                payload = bytes(buf[start + 9 : start + 9 + length])
                start += 9 + length
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
        finally:
            del buf[:start]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != h2.CONTINUATION:
            raise _ConnectionError(h2.PROTOCOL_ERROR, "header block not continued")
        if kind == h2.DATA:
            self._data(flags, stream_id, payload)
        elif kind == h2.HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == h2.CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == h2.SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == h2.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == h2.PING:
            if stream_id or len(payload) != 8:
                raise _ConnectionError(h2.PROTOCOL_ERROR, "malformed PING")
            if not flags & h2.ACK:
                self._calm()
                self._write(h2.frame(h2.PING, h2.ACK, 0, payload))
        elif kind == h2.RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise _ConnectionError(h2.PROTOCOL_ERROR, "malformed RST_STREAM")
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._drop(stream)
        elif kind == h2.GOAWAY:
            self._going_away = True
            if not self.streams:
                self.close()
        elif kind == h2.PUSH_PROMISE:
            raise _ConnectionError(h2.PROTOCOL_ERROR, "a client cannot push")
        elif kind == h2.PRIORITY and (not stream_id or len(payload) != 5):
            raise _ConnectionError(h2.PROTOCOL_ERROR, "malformed PRIORITY")
        # any other type is ignored (RFC 9113 §4.1)

    # frames ----------------------------------------------------------------------------

    def _unpadded(self, flags: int, payload: bytes) -> bytes:
        if not flags & h2.PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise _ConnectionError(h2.PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise _ConnectionError(h2.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._recv_window -= size
        self._recv_unacked += size
        if self._recv_window < 0:
            raise _ConnectionError(h2.FLOW_CONTROL_ERROR, "DATA past the connection's window")
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_id:
                raise _ConnectionError(h2.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a call already answered or reset: its bytes only count for the window
        if stream.ended:
            self._reset(stream, h2.STREAM_CLOSED)
            return
        stream.recv_window -= size
        stream.recv_unacked += size
        if stream.recv_unacked >= STREAM_WINDOW // 4:
            self._stream_due = True
        if stream.recv_window < 0:
            self._reset(stream, h2.FLOW_CONTROL_ERROR)
            return
        stream.last = self.last
        data = self._unpadded(flags, payload)
        if data and not stream.done and stream.trailers is None:
            stream.buffer += data
            self._held += len(data)
            self._messages(stream)
        if flags & h2.END_STREAM:
            self._end_of_requests(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise _ConnectionError(h2.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpadded(flags, payload)
        if flags & h2.PRIORITY_FLAG:
            block = block[5:]
        if flags & h2.END_HEADERS:
            self._header_block(stream_id, flags, block)
        else:
            self._block = bytearray(block)
            self._block_stream, self._block_flags = stream_id, flags
            self._block_started = self.last

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is None or stream_id != self._block_stream:
            raise _ConnectionError(h2.PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        self._block += payload
        if len(self._block) > MAX_HEADER_BYTES:
            raise _ConnectionError(
                h2.ENHANCE_YOUR_CALM, f"header block over {MAX_HEADER_BYTES} bytes"
            )
        if flags & h2.END_HEADERS:
            block, self._block = bytes(self._block), None
            self._header_block(stream_id, self._block_flags, block)

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        if len(block) > MAX_HEADER_BYTES:
            raise _ConnectionError(
                h2.ENHANCE_YOUR_CALM, f"header block over {MAX_HEADER_BYTES} bytes"
            )
        try:
            fields = self._decoder.decode(block)
        except hpack.HPACKError as exc:
            raise _ConnectionError(h2.COMPRESSION_ERROR, f"header block: {exc}") from exc
        stream = self.streams.get(stream_id)
        if stream is not None or stream_id <= self._last_id:
            # trailers from the client (gRPC sends none, but they may end a stream)
            if stream is not None and flags & h2.END_STREAM:
                self._end_of_requests(stream)
            elif stream is not None:
                self._reset(stream, h2.PROTOCOL_ERROR)
            return
        if not stream_id & 1:
            raise _ConnectionError(h2.PROTOCOL_ERROR, "a client stream id must be odd")
        self._last_id = stream_id
        self._control = 0
        if self._going_away:
            return
        if len(self.streams) >= MAX_STREAMS:
            self._write(h2.rst_stream(stream_id, h2.REFUSED_STREAM))
            return
        stream = Stream(self, stream_id, self._peer_window)
        self.streams[stream_id] = stream
        refusal = self._head(stream, fields)
        if refusal is None:
            refusal = self._server.open(stream)
        if refusal is not None:
            stream.ended = bool(flags & h2.END_STREAM)
            self._refuse(stream, *refusal)
            return
        if not stream.unary:
            stream.inbox = deque()
            self._server.run(stream)
        if flags & h2.END_STREAM:
            self._end_of_requests(stream)

    def _head(self, stream: Stream, fields: list[tuple[bytes, bytes]]) -> tuple[Status, str] | None:
        """Read the request head into ``stream``; a refusal when it is not a gRPC call."""
        method = content_type = b""
        metadata = stream.metadata
        for name, value in fields:
            if name[:1] == b":":
                if name == b":path":
                    stream.method = value.decode("latin-1")
                elif name == b":method":
                    method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                stream.timeout_s = _timeout(value.decode("latin-1"))
            else:
                key = name.decode("latin-1")
                if key not in metadata:
                    metadata[key] = value.decode("utf-8", "replace")
        if method != b"POST":
            return Status.UNIMPLEMENTED, "gRPC calls are POST requests"
        if not content_type.startswith(b"application/grpc"):
            return Status.UNIMPLEMENTED, "content-type must be application/grpc"
        encoding = metadata.get("grpc-encoding", "identity")
        if encoding != "identity":
            return Status.UNIMPLEMENTED, f"message encoding {encoding!r} is not supported"
        return None

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise _ConnectionError(h2.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & h2.ACK:
            return
        if len(payload) % 6:
            raise _ConnectionError(h2.FRAME_SIZE_ERROR, "SETTINGS of a partial entry")
        self._calm()
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HL", payload, i)
            if key == h2.INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    raise _ConnectionError(h2.FLOW_CONTROL_ERROR, "window over 2^31-1")
                delta, self._peer_window = value - self._peer_window, value
                for stream in self.streams.values():
                    stream.out_window += delta
            elif key == h2.MAX_FRAME_SIZE:
                if not h2.DEFAULT_FRAME_SIZE <= value <= 2**24 - 1:
                    raise _ConnectionError(h2.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self._peer_frame = value
        self._write(h2.frame(h2.SETTINGS, h2.ACK, 0))
        for stream in list(self.streams.values()):
            self.flush(stream)

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(h2.FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise _ConnectionError(h2.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > h2.MAX_WINDOW:
                raise _ConnectionError(h2.FLOW_CONTROL_ERROR, "window over 2^31-1")
            for stream in list(self.streams.values()):
                if stream.pending:
                    self.flush(stream)
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if not increment:
            self._reset(stream, h2.PROTOCOL_ERROR)
            return
        stream.out_window += increment
        if stream.out_window > h2.MAX_WINDOW:
            self._reset(stream, h2.FLOW_CONTROL_ERROR)
            return
        self.flush(stream)

    def _calm(self) -> None:
        self._control += 1
        if self._control > _PING_FLOOD:
            raise _ConnectionError(h2.ENHANCE_YOUR_CALM, "PING or SETTINGS flood")

    # requests --------------------------------------------------------------------------

    def _messages(self, stream: Stream) -> None:
        """Cut the stream's buffered bytes into whole messages."""
        buf = stream.buffer
        limit = self._server.max_message_bytes
        while len(buf) >= 5:
            compressed, size = _PREFIX.unpack_from(buf)
            if size > limit:
                self._refuse(
                    stream,
                    Status.RESOURCE_EXHAUSTED,
                    f"received message larger than max ({size} vs. {limit})",
                )
                return
            if compressed:
                self._refuse(stream, Status.UNIMPLEMENTED, "compressed messages not supported")
                return
            if len(buf) < 5 + size:
                return
            message = bytes(buf[5 : 5 + size])
            del buf[: 5 + size]
            self._held -= 5
            if stream.inbox is not None:
                stream.inbox.append(message)
                self._wake(stream)
            else:
                stream.messages.append(message)

    def _end_of_requests(self, stream: Stream) -> None:
        stream.ended = True
        if stream.done or stream.trailers is not None:
            if not stream.pending:
                self._close_stream(stream)
            return
        if stream.buffer:
            self._refuse(stream, Status.INTERNAL, "request ended inside a message")
            return
        if stream.inbox is not None:
            stream.inbox.append(None)
            self._wake(stream)
            return
        if len(stream.messages) != 1:
            self._refuse(
                stream,
                Status.UNIMPLEMENTED,
                f"a unary call takes 1 message, not {len(stream.messages)}",
            )
            return
        message = stream.messages.pop()
        self.consumed(stream, len(message))
        self._server.run(stream, message)

    def _wake(self, stream: Stream) -> None:
        waiter = self.waiters.pop(stream.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def consumed(self, stream: Stream, size: int) -> None:
        """``size`` request bytes of ``stream`` were handed to its handler."""
        self._held -= size
        if stream.inbox is not None and not stream.ended:
            self._return_window()

    def _return_window(self) -> None:
        """Give windows back once a quarter is used, while the connection holds little."""
        if self.closed or self._held >= self._server.max_message_bytes:
            return
        out = []
        if self._recv_unacked >= CONNECTION_WINDOW // 4:
            out.append(h2.window_update(0, self._recv_unacked))
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
        if self._stream_due:
            self._stream_due = False
            for stream in self.streams.values():
                if stream.recv_unacked >= STREAM_WINDOW // 4 and not stream.ended:
                    out.append(h2.window_update(stream.id, stream.recv_unacked))
                    stream.recv_window += stream.recv_unacked
                    stream.recv_unacked = 0
        if out:
            self._write(b"".join(out))

    # answers ---------------------------------------------------------------------------

    def flush(self, stream: Stream) -> None:
        """Write what ``stream`` has to send, as far as the windows allow."""
        if stream.done or self.closed:
            return
        out = []
        if not stream.headers_sent:
            if not stream.pending and stream.trailers is not None:
                # trailers-only: the status in the one HEADERS frame
                out.append(
                    h2.frame(
                        h2.HEADERS,
                        h2.END_HEADERS | h2.END_STREAM,
                        stream.id,
                        _RESPONSE_HEADERS + stream.trailers,
                    )
                )
                self._write(b"".join(out))
                self._finished(stream)
                return
            out.append(h2.frame(h2.HEADERS, h2.END_HEADERS, stream.id, _RESPONSE_HEADERS))
            stream.headers_sent = True
        pending = stream.pending
        while pending:
            size = min(len(pending), stream.out_window, self._send_window, self._peer_frame)
            if size <= 0:
                break
            out.append(h2.frame(h2.DATA, 0, stream.id, bytes(pending[:size])))
            del pending[:size]
            stream.out_window -= size
            self._send_window -= size
        if not pending and stream.trailers is not None:
            out.append(
                h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, stream.trailers)
            )
            self._write(b"".join(out))
            self._finished(stream)
            return
        if out:
            self._write(b"".join(out))

    def _finished(self, stream: Stream) -> None:
        """The stream's trailers are written: the call is over on our side."""
        if not stream.ended:
            # the answer is complete: the client need not send the rest (RFC 9113 §8.1)
            self._write(h2.rst_stream(stream.id, h2.NO_ERROR))
        self._close_stream(stream)

    def _close_stream(self, stream: Stream) -> None:
        if stream.done:
            return
        stream.done = True
        self.streams.pop(stream.id, None)
        self._held -= len(stream.buffer)
        if stream.inbox is not None:
            self._held -= sum(len(m) for m in stream.inbox if m is not None)
        self._held -= sum(len(m) for m in stream.messages)
        self._wake(stream)
        self._server.completed(self)
        if self._going_away and not self.streams:
            self.close()
        else:
            self._return_window()

    def _refuse(self, stream: Stream, status: Status, message: str) -> None:
        """End a call with ``status`` before or instead of its handler."""
        if stream.task is not None:
            stream.task.cancel()
        stream.pending.clear()
        stream.trailers = None
        stream.finish(status, message)

    def _reset(self, stream: Stream, code: int) -> None:
        self._write(h2.rst_stream(stream.id, code))
        self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        """Forget ``stream`` without an answer (reset by either side)."""
        if stream.task is not None:
            stream.task.cancel()
        self._close_stream(stream)

    # connection ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    def _not_http2(self) -> None:
        """A client that does not speak HTTP/2 (curl, a browser) gets one readable answer."""
        body = b"this port serves gRPC (HTTP/2); the REST API is on the HTTP port\n"
        self._write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.close()

    def _fail(self, code: int, message: str) -> None:
        """A connection error (RFC 9113 §5.4.1): GOAWAY with the reason, then close."""
        log.debug("gRPC connection from %s: %s", self.peer or "local", message)
        self.close(code, message)

    def check_deadlines(self, now: float) -> None:
        """Close or reset what has waited past its deadline (called by the server's sweep)."""
        if self.closed:
            return
        server = self._server
        if not self._preface and now - self.started > server.header_timeout_s:
            self.close()
        elif self._block is not None and now - self._block_started > server.header_timeout_s:
            self._fail(h2.PROTOCOL_ERROR, "header block not complete in time")
        elif not self.streams and now - self.last > server.idle_timeout_s:
            self.close(h2.NO_ERROR, "idle")
        else:
            for stream in list(self.streams.values()):
                late = now - stream.last > server.body_timeout_s
                if stream.unary and not stream.ended and late and stream.task is None:
                    self._refuse(
                        stream,
                        Status.DEADLINE_EXCEEDED,
                        f"no request bytes for {server.body_timeout_s} s",
                    )

    def close(self, code: int = h2.NO_ERROR, message: str = "") -> None:
        """Close after what is already written, with a GOAWAY saying why (the server is
        stopping, the connection idle, or a connection error)."""
        if not self.closed and self._transport is not None:
            if self._preface and not self._goaway_sent:
                self._goaway_sent = True
                self._transport.write(h2.goaway(self._last_id, code, message))
            self._transport.close()
        self._going_away = True
        self.closed = True
        self._server.forget(self)
        for stream in list(self.streams.values()):
            self._drop(stream)

    def evict(self) -> None:
        """Drop this connection at once to make room for a new one."""
        self.closed = True
        self._server.forget(self)
        if self._transport is not None:
            self._transport.abort()
