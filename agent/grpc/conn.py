"""One HTTP/2 connection of :class:`~.server.GrpcServer`: gRPC calls over
:class:`~.frames.FrameProtocol`'s frames.

Each new stream becomes a :class:`~.stream.Stream`: its header block is read as a gRPC
request head, its DATA is cut into messages (a 1-byte compressed flag and a 4-byte length
before each), and the server runs the call (a unary one once its message is complete, a
streaming one at once). Answers are written as far as the client's flow-control windows allow.

Limits, so that one client cannot grow the process: a message over the server's
``max_message_bytes`` ends its call with RESOURCE_EXHAUSTED as soon as its length prefix
arrives; at most :data:`MAX_STREAMS` calls per connection (more are refused with
REFUSED_STREAM, RFC 9113 §5.1.2); the receive windows are returned only while the connection
holds less than ``max_message_bytes`` of unconsumed request bytes, so a client that outruns the
server is stopped by flow control, and one that sends past the windows it was given is reset
(FLOW_CONTROL_ERROR). Deadlines, checked by the server's sweep: the preface and every header
block within ``header_timeout_s``, a unary request's messages must keep arriving
(``body_timeout_s``), and a connection without calls is closed after ``idle_timeout_s``. A
streaming call (``ModelStreamInfer``) may stay open while its connection lives, as with grpcio;
its answers wait for the client's window (:meth:`~.stream.Stream.drained`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from edgeserve.agent.grpc import h2
from edgeserve.agent.grpc.frames import MAX_HEADER_BYTES, FrameProtocol, ProtocolError
from edgeserve.agent.grpc.status import Status
from edgeserve.agent.grpc.stream import PREFIX, STREAM_WINDOW, Head, Stream, read_head, wake

if TYPE_CHECKING:
    from edgeserve.agent.grpc.server import GrpcServer

__all__ = ["MAX_STREAMS", "Connection"]

MAX_STREAMS = 100  # calls in flight per connection (SETTINGS_MAX_CONCURRENT_STREAMS)
CONNECTION_WINDOW = 16 << 20  # bytes all of a connection's calls may send before it is returned

_RESPONSE_HEADERS = b"\x88" + h2.literal(b"content-type", b"application/grpc")  # :status 200
_SERVER_PREFACE = h2.settings(
    {
        h2.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
        h2.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        h2.MAX_HEADER_LIST_SIZE: MAX_HEADER_BYTES,
    }
) + h2.window_update(0, CONNECTION_WINDOW - h2.DEFAULT_WINDOW)


class Connection(FrameProtocol):
    """One client connection (created by the server for each accepted socket)."""

    def __init__(self, server: GrpcServer) -> None:
        super().__init__(_SERVER_PREFACE, read_head)
        self._server = server
        self.streams: dict[int, Stream] = {}
        self.waiters: dict[int, asyncio.Future] = {}  # streams waiting for a request message
        self.drains: dict[int, asyncio.Future] = {}  # streams waiting for window to answer
        self._recv_window = CONNECTION_WINDOW
        self._recv_unacked = 0
        self._held = 0  # request bytes received and not yet consumed, all streams
        self._stream_due = False  # a stream's window is due to be returned

    @property
    def busy(self) -> bool:
        """A call is in progress (the connection is then never evicted)."""
        return bool(self.streams)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._server.admit(self):
            transport.abort()
            self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_close()

    # frames of streams -----------------------------------------------------------------

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self._recv_window -= size
        self._recv_unacked += size
        if self._recv_window < 0:
            raise ProtocolError(h2.FLOW_CONTROL_ERROR, "DATA past the connection's window")
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_id:
                raise ProtocolError(h2.PROTOCOL_ERROR, "DATA on an idle stream")
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
        data = self.unpadded(flags, payload)
        if data and not stream.done and stream.trailers is None:
            stream.buffer += data
            self._held += len(data)
            self._messages(stream)
        if flags & h2.END_STREAM:
            self._end_of_requests(stream)

    def _on_headers(self, flags: int, stream_id: int, head: Head) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None or stream_id <= self._last_id:
            # trailers from the client (gRPC sends none, but they may end a stream)
            if stream is not None and flags & h2.END_STREAM:
                self._end_of_requests(stream)
            elif stream is not None:
                self._reset(stream, h2.PROTOCOL_ERROR)
            return
        self._last_id = stream_id
        if self._going_away:
            return
        if len(self.streams) >= MAX_STREAMS:
            self._write(h2.rst_stream(stream_id, h2.REFUSED_STREAM))
            return
        stream = Stream(self, stream_id, self._peer_window)
        self.streams[stream_id] = stream
        stream.method, stream.metadata, stream.timeout_s, refusal = head
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

    def _on_reset(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._drop(stream)

    def _on_window(self, stream_id: int, increment: int) -> None:
        if not stream_id:  # the connection's window, or every stream's initial one, changed
            for stream in list(self.streams.values()):
                stream.out_window += increment
                if stream.pending or increment:
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

    def _on_goaway(self) -> None:
        if not self.streams:
            self.close()

    def _on_received(self) -> None:
        self._return_window()

    def _on_close(self) -> None:
        self._server.forget(self)
        for stream in list(self.streams.values()):
            self._drop(stream)

    # requests --------------------------------------------------------------------------

    def _messages(self, stream: Stream) -> None:
        """Cut the stream's buffered bytes into whole messages."""
        buf = stream.buffer
        limit = self._server.max_message_bytes
        while len(buf) >= 5:
            compressed, size = PREFIX.unpack_from(buf)
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
        wake(self.waiters, stream.id)

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
        if len(pending) <= STREAM_WINDOW:
            wake(self.drains, stream.id)

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
        wake(self.drains, stream.id)
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

    # deadlines and eviction ------------------------------------------------------------

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
                waiting = stream.task is None and stream.trailers is None
                if stream.unary and not stream.ended and late and waiting:
                    self._refuse(
                        stream,
                        Status.DEADLINE_EXCEEDED,
                        f"no request bytes for {server.body_timeout_s} s",
                    )

    def evict(self) -> None:
        """Drop this connection at once to make room for a new one."""
        self.closed = True
        self._server.forget(self)
        if self._transport is not None:
            self._transport.abort()
