"""A raw HTTP/2 client for tests that must send what well-behaved clients never do.

Frames are built by hand (RFC 9113 §4.1) and header blocks encoded with the ``hpack`` package,
so the server under test is driven by bytes it did not produce. :meth:`RawH2.call` performs a
whole gRPC unary call, returning flow-control windows as DATA arrives.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0,
    0x1,
    0x3,
    0x4,
    0x6,
    0x7,
    0x8,
    0x9,
)
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
SERVICE = "/inference.GRPCInferenceService/"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">L", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">L", stream_id)
        + payload
    )


def message(body: bytes) -> bytes:
    """A gRPC length-prefixed message."""
    return b"\0" + struct.pack(">L", len(body)) + body


@dataclass
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes


@dataclass
class Answer:
    """What came back on one stream."""

    headers: list[dict[str, str]] = field(default_factory=list)  # header blocks, trailers last
    data: bytes = b""
    reset: int | None = None  # the RST_STREAM code, if any
    data_frames: int = 0

    @property
    def status(self) -> int:
        return int(self.headers[-1]["grpc-status"])

    @property
    def message(self) -> str:
        return self.headers[-1].get("grpc-message", "")


class RawH2:
    """One connection to ``127.0.0.1:port``; ``settings`` go in the first SETTINGS frame."""

    def __init__(
        self, port: int, settings: dict[int, int] | None = None, timeout: float = 10
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buf = b""
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder()
        self.next_id = 1
        body = b"".join(struct.pack(">HL", k, v) for k, v in (settings or {}).items())
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, body))

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def head(self, method: str, metadata: dict[str, str] | None = None) -> bytes:
        fields = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", SERVICE + method),
            (":authority", "127.0.0.1"),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
            *(metadata or {}).items(),
        ]
        return self._encoder.encode(fields)

    def open(
        self, method: str, metadata: dict[str, str] | None = None, *, end: bool = False
    ) -> int:
        stream_id, self.next_id = self.next_id, self.next_id + 2
        flags = END_HEADERS | (END_STREAM if end else 0)
        self.send(frame(HEADERS, flags, stream_id, self.head(method, metadata)))
        return stream_id

    def read_frame(self) -> Frame | None:
        """The next frame, or None when the server closed the connection."""
        while len(self._buf) < 9 or len(self._buf) < 9 + int.from_bytes(self._buf[:3], "big"):
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
        length = int.from_bytes(self._buf[:3], "big")
        kind, flags = self._buf[3], self._buf[4]
        stream_id = struct.unpack(">L", self._buf[5:9])[0] & 0x7FFFFFFF
        payload, self._buf = self._buf[9 : 9 + length], self._buf[9 + length :]
        return Frame(kind, flags, stream_id, payload)

    def goaway(self) -> tuple[int, str] | None:
        """Read until the server's GOAWAY: its error code and debug text (None: closed without)."""
        while (f := self.read_frame()) is not None:
            if f.kind == GOAWAY:
                return struct.unpack(">L", f.payload[4:8])[0], f.payload[8:].decode()
        return None

    def answer(self, stream_id: int, *, window_updates: bool = True) -> Answer:
        """Read frames until ``stream_id`` ends, answering PINGs and returning windows."""
        got = Answer()
        while (f := self.read_frame()) is not None:
            if f.kind == SETTINGS and not f.flags & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            if f.stream_id != stream_id:
                continue
            if f.kind == HEADERS:
                got.headers.append({k: v for k, v in self._decoder.decode(f.payload)})
            elif f.kind == DATA:
                got.data += f.payload
                got.data_frames += 1
                if window_updates and f.payload:
                    increment = struct.pack(">L", len(f.payload))
                    self.send(frame(WINDOW_UPDATE, 0, 0, increment))
                    self.send(frame(WINDOW_UPDATE, 0, stream_id, increment))
            elif f.kind == RST_STREAM:
                got.reset = struct.unpack(">L", f.payload)[0]
                return got
            if f.flags & END_STREAM:
                return got
        raise ConnectionError("closed before the stream ended")

    def call(self, method: str, body: bytes, metadata: dict[str, str] | None = None) -> Answer:
        """One unary call."""
        stream_id = self.open(method, metadata)
        self.send(frame(DATA, END_STREAM, stream_id, message(body)))
        return self.answer(stream_id)
