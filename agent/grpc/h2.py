"""HTTP/2 (RFC 9113) as a gRPC server needs it: frames, the HPACK header decoder with a cache,
and the constant header blocks of every answer.

Written for the agent rather than taken from ``h2``: driving ``h2.H2Connection`` through one
unary gRPC call (receive a request's HEADERS and DATA, send HEADERS, DATA and trailers) took
375-409 µs of CPU per call on the 2-core x86_64 machine the README's figures come from, most
of a whole HTTP/1.1 request through the agent (0.51 ms p50 with the model). This module and
:mod:`.conn` do the same call in 36-40 µs (``benchmarks/grpc_h2.py`` prints both).
HPACK itself is the ``hpack`` package's decoder (the same one ``h2`` uses); a block that
changed nothing in the decoder's dynamic table decodes to the same headers until the table
changes, so such blocks are cached with what was read from them: a client's repeated call,
whose headers are all indexed entries, then costs a dict lookup instead of ~40 µs of decoding.
Answers use no dynamic table (literal fields without indexing), so their header blocks are
constants.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Generic, TypeVar

import hpack

__all__ = [
    "CLIENT_PREFACE",
    "HeaderDecoder",
    "frame",
    "goaway",
    "literal",
    "rst_stream",
    "settings",
    "window_update",
]

CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 §6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
# flags
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# settings (§6.5.2)
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
# error codes (§7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
MAX_WINDOW = 2**31 - 1

_HEAD = struct.Struct(">HBBBL")  # length as 16 + 8 bits, type, flags, stream id
_CACHED_BLOCKS = 64  # distinct header blocks remembered per connection
T = TypeVar("T")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: its 9-byte header and ``payload``."""
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def settings(values: dict[int, int]) -> bytes:
    """A SETTINGS frame carrying ``values``."""
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", k, v) for k, v in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame (``stream_id`` 0: the connection's window)."""
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    """An RST_STREAM frame ending ``stream_id`` with the error ``code``."""
    return frame(RST_STREAM, 0, stream_id, struct.pack(">L", code))


def goaway(last_stream_id: int, code: int, debug: str = "") -> bytes:
    """A GOAWAY frame: streams after ``last_stream_id`` were not processed."""
    return frame(GOAWAY, 0, 0, struct.pack(">LL", last_stream_id, code) + debug.encode()[:256])


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with ``first``'s high bits above its prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, new name (RFC 7541 §6.2.2): it leaves the
    client's dynamic table as it was, so the encoded bytes mean the same in any block."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


class HeaderDecoder(Generic[T]):
    """One connection's HPACK decoder, with blocks that left its dynamic table alone cached.

    ``parse`` turns a block's header fields (raw bytes) into what the connection uses; for a
    cached block its earlier result is returned, so it must not be changed by the caller.

    Raises (from :meth:`decode`) ``hpack.HPACKError`` for a malformed block or one whose
    header list is over ``max_list_bytes``: a connection error (COMPRESSION_ERROR).
    """

    def __init__(
        self, max_list_bytes: int, parse: Callable[[list[tuple[bytes, bytes]]], T]
    ) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_list_bytes)
        self._parse = parse
        self._cache: dict[bytes, T] = {}

    def decode(self, block: bytes) -> T:
        """What ``parse`` makes of one complete header block."""
        hit = self._cache.get(block)
        if hit is not None:
            return hit
        table = self._decoder.header_table
        entries = table.dynamic_entries
        size, first, limit = len(entries), entries[0] if entries else None, table.maxsize
        fields: list[tuple[bytes, bytes]] = self._decoder.decode(block, raw=True)  # type: ignore[assignment]
        parsed = self._parse(fields)
        unchanged = (
            len(entries) == size
            and (entries[0] if entries else None) is first
            and table.maxsize == limit
        )
        if not unchanged:
            # indices now name other entries: what earlier blocks meant is no longer known
            self._cache.clear()
        elif len(self._cache) < _CACHED_BLOCKS:
            self._cache[block] = parsed
        return parsed
