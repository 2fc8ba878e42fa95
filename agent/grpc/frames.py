"""The HTTP/2 connection layer under the agent's gRPC calls (RFC 9113): prefaces, frames, header
blocks, settings, PING, GOAWAY and the connection's send window.

:class:`FrameProtocol` is an ``asyncio.Protocol`` that checks the client preface (a client
that does not speak HTTP/2, such as curl or a browser, gets one readable HTTP/1.1 400), cuts
frames as bytes arrive, joins HEADERS and CONTINUATION into one block and decodes it
(:class:`~.h2.HeaderDecoder`, read by the subclass's ``parse``), answers SETTINGS and PING,
and ends the connection with a GOAWAY naming the error when the client breaks the protocol
(RFC 9113 §5.4.1): frames over 16 KiB, a header block over :data:`MAX_HEADER_BYTES`, a PING or
SETTINGS flood, a client push.
What a stream carries is left to the subclass (:class:`~.conn.Connection`) through the
``_on_*`` hooks.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

import hpack
from edgeserve.agent.grpc import h2

__all__ = ["MAX_HEADER_BYTES", "FrameProtocol", "ProtocolError"]

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # bytes of one header block, encoded or decoded
_PING_FLOOD = 1000  # PINGs or SETTINGS with no request bytes between: a flood (ENHANCE_YOUR_CALM)
_HEAD = struct.Struct(">HBBBL")
_U32 = struct.Struct(">L")


class ProtocolError(Exception):
    """A connection error: the connection ends with a GOAWAY carrying ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class FrameProtocol(asyncio.Protocol):
    """HTTP/2 framing for one accepted connection; subclasses handle the streams."""

    def __init__(
        self, server_preface: bytes, parse: Callable[[list[tuple[bytes, bytes]]], Any]
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.peer = ""
        self._server_preface = server_preface
        self._buf = bytearray()
        self._preface = False  # the client preface has arrived
        self._decoder = h2.HeaderDecoder(MAX_HEADER_BYTES, parse)
        self._block: bytearray | None = None  # a header block awaiting CONTINUATION frames
        self._block_stream = 0
        self._block_flags = 0
        self._block_started = 0.0
        self._last_id = 0  # the highest stream id the client opened
        self._peer_window = h2.DEFAULT_WINDOW  # the client's SETTINGS_INITIAL_WINDOW_SIZE
        self._peer_frame = h2.DEFAULT_FRAME_SIZE  # its SETTINGS_MAX_FRAME_SIZE
        self._send_window = h2.DEFAULT_WINDOW  # the connection's window to send in
        self._control = 0  # PINGs and SETTINGS since the last HEADERS or DATA
        self._going_away = False  # no new calls (the client's GOAWAY, or ours)
        self._goaway_sent = False
        self.closed = False
        self.started = self.loop.time()
        self.last = self.started

    # hooks for the streams -------------------------------------------------------------

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise NotImplementedError

    def _on_headers(self, flags: int, stream_id: int, head: Any) -> None:
        """A complete header block, as ``parse`` read it."""
        raise NotImplementedError

    def _on_reset(self, stream_id: int) -> None:
        """The client reset ``stream_id``."""

    def _on_window(self, stream_id: int, increment: int) -> None:
        """The client opened ``stream_id``'s window (0: the connection's, or every stream's
        initial window changed by ``increment``)."""

    def _on_goaway(self) -> None:
        """The client will open no more streams."""

    def _on_received(self) -> None:
        """A read's frames are all handled."""

    def _on_close(self) -> None:
        """The connection is closed."""

    # asyncio.Protocol ------------------------------------------------------------------

    def pause_writing(self) -> None:
        # the client does not read what it asked for: read no more of its requests until it does
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.resume_reading()

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
                self._write(self._server_preface)
            self._frames()
            self._on_received()
        except ProtocolError as exc:
            self._fail(exc.code, str(exc))
        except Exception:  # a bug must close this connection, not leave it stuck
            log.exception("gRPC connection from %s failed", self.peer or "local")
            self._fail(h2.INTERNAL_ERROR, "internal error")

    # frames ----------------------------------------------------------------------------

    def _frames(self) -> None:
        buf = self._buf
        start = 0
        end = len(buf)
        try:
            while end - start >= 9 and not self.closed:
                high, low, kind, flags, stream_id = _HEAD.unpack_from(buf, start)
                length = (high << 8) | low
                if length > h2.DEFAULT_FRAME_SIZE:
                    raise ProtocolError(h2.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if end - start < 9 + length:
                    break
                payload = bytes(buf[start + 9 : start + 9 + length])
                start += 9 + length
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
        finally:
            del buf[:start]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != h2.CONTINUATION:
            raise ProtocolError(h2.PROTOCOL_ERROR, "header block not continued")
        if kind == h2.DATA:
            if not stream_id:
                raise ProtocolError(h2.PROTOCOL_ERROR, "DATA on stream 0")
            self._control = 0  # a client sending requests is not flooding (grpcio pings per read)
            self._on_data(flags, stream_id, payload)
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
                raise ProtocolError(h2.PROTOCOL_ERROR, "malformed PING")
            if not flags & h2.ACK:
                self._calm()
                self._write(h2.frame(h2.PING, h2.ACK, 0, payload))
        elif kind == h2.RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise ProtocolError(h2.PROTOCOL_ERROR, "malformed RST_STREAM")
            self._on_reset(stream_id)
        elif kind == h2.GOAWAY:
            self._going_away = True
            self._on_goaway()
        elif kind == h2.PUSH_PROMISE:
            raise ProtocolError(h2.PROTOCOL_ERROR, "a client cannot push")
        elif kind == h2.PRIORITY and (not stream_id or len(payload) != 5):
            raise ProtocolError(h2.PROTOCOL_ERROR, "malformed PRIORITY")
        # any other type is ignored (RFC 9113 §4.1)

    def unpadded(self, flags: int, payload: bytes) -> bytes:
        """A DATA or HEADERS payload without its padding."""
        if not flags & h2.PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise ProtocolError(h2.PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ProtocolError(h2.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self.unpadded(flags, payload)
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
            raise ProtocolError(h2.PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        self._block += payload
        if len(self._block) > MAX_HEADER_BYTES:
            raise ProtocolError(h2.ENHANCE_YOUR_CALM, f"header block over {MAX_HEADER_BYTES} bytes")
        if flags & h2.END_HEADERS:
            block, self._block = bytes(self._block), None
            self._header_block(stream_id, self._block_flags, block)

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        if len(block) > MAX_HEADER_BYTES:
            raise ProtocolError(h2.ENHANCE_YOUR_CALM, f"header block over {MAX_HEADER_BYTES} bytes")
        try:
            head = self._decoder.decode(block)
        except hpack.HPACKError as exc:
            raise ProtocolError(h2.COMPRESSION_ERROR, f"header block: {exc}") from exc
        if stream_id > self._last_id:
            if not stream_id & 1:
                raise ProtocolError(h2.PROTOCOL_ERROR, "a client stream id must be odd")
            self._control = 0
        self._on_headers(flags, stream_id, head)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolError(h2.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & h2.ACK:
            return
        if len(payload) % 6:
            raise ProtocolError(h2.FRAME_SIZE_ERROR, "SETTINGS of a partial entry")
        self._calm()
        delta = 0
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HL", payload, i)
            if key == h2.INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    raise ProtocolError(h2.FLOW_CONTROL_ERROR, "window over 2^31-1")
                delta += value - self._peer_window
                self._peer_window = value
            elif key == h2.MAX_FRAME_SIZE:
                if not h2.DEFAULT_FRAME_SIZE <= value <= 2**24 - 1:
                    raise ProtocolError(h2.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self._peer_frame = value
        self._write(h2.frame(h2.SETTINGS, h2.ACK, 0))
        self._on_window(0, delta)

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(h2.FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise ProtocolError(h2.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > h2.MAX_WINDOW:
                raise ProtocolError(h2.FLOW_CONTROL_ERROR, "window over 2^31-1")
            self._on_window(0, 0)
        else:
            self._on_window(stream_id, increment)

    def _calm(self) -> None:
        self._control += 1
        if self._control > _PING_FLOOD:
            raise ProtocolError(h2.ENHANCE_YOUR_CALM, "PING or SETTINGS flood")

    # the connection --------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    def _not_http2(self) -> None:
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
        self._on_close()
