"""One gRPC call on an HTTP/2 connection (:class:`Stream`): its request head, its request
messages, and its answer as the server writes it (:meth:`Stream.reply` for a unary answer:
headers, message and trailers in one write; :meth:`Stream.send` and :meth:`Stream.finish` for
a stream of answers). The connection (:mod:`.conn`) moves the bytes."""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NamedTuple

from edgeserve.agent.grpc import h2
from edgeserve.agent.grpc.status import Status

if TYPE_CHECKING:
    from edgeserve.agent.grpc.conn import Connection

__all__ = ["PREFIX", "STREAM_WINDOW", "Head", "Stream", "read_head", "wake"]

STREAM_WINDOW = 1 << 20  # bytes each call may send before its window is returned
PREFIX = struct.Struct(">BL")  # a gRPC message's compressed flag and length
_MAX_DETAIL = 2048  # characters of an error message sent in grpc-message
_OK_TRAILERS = h2.literal(b"grpc-status", b"0")
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

    async def drained(self) -> None:
        """Wait while more than a window of answers waits for the client's window (a
        streaming call's back-pressure: a client that stops reading stops its handler)."""
        while len(self.pending) > STREAM_WINDOW and not self.done:
            waiter = self._conn.loop.create_future()
            self._conn.drains[self.id] = waiter
            await waiter

    def _queue(self, message: bytes) -> None:
        if self.done or self.trailers is not None:
            return
        self.pending += PREFIX.pack(0, len(message))
        self.pending += message


class Head(NamedTuple):
    """What a request's header block says (shared by every call that sent the same block:
    read-only)."""

    method: str  # the :path, e.g. /inference.GRPCInferenceService/ModelInfer
    metadata: dict[str, str]  # request metadata, lower-case keys (first wins)
    timeout_s: float | None  # grpc-timeout
    refusal: tuple[Status, str] | None  # why this is not a gRPC call we take


def read_head(fields: list[tuple[bytes, bytes]]) -> Head:
    """Read a request's header fields."""
    method = content_type = b""
    path = ""
    timeout_s = None
    metadata: dict[str, str] = {}
    for name, value in fields:
        if name[:1] == b":":
            if name == b":path":
                path = value.decode("latin-1")
            elif name == b":method":
                method = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            timeout_s = _timeout(value.decode("latin-1"))
        else:
            key = name.decode("latin-1")
            if key not in metadata:
                metadata[key] = value.decode("utf-8", "replace")
    refusal: tuple[Status, str] | None = None
    encoding = metadata.get("grpc-encoding", "identity")
    if method != b"POST":
        refusal = Status.UNIMPLEMENTED, "gRPC calls are POST requests"
    elif not content_type.startswith(b"application/grpc"):
        refusal = Status.UNIMPLEMENTED, "content-type must be application/grpc"
    elif encoding != "identity":
        refusal = Status.UNIMPLEMENTED, f"message encoding {encoding!r} is not supported"
    return Head(path, metadata, timeout_s, refusal)


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


def wake(waiters: dict[int, asyncio.Future], stream_id: int) -> None:
    waiter = waiters.pop(stream_id, None)
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
