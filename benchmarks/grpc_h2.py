"""CPU per unary gRPC call in the HTTP/2 layer: the agent's own connection against ``h2``.

Both sides get the same bytes, made by an ``h2`` client: a ``ModelInfer``-sized request
(HEADERS and DATA), answered with a 53-byte message (HEADERS, DATA, trailers), windows returned
as a client does. Only the server side is timed, in-process, without sockets or a model: for
``h2``, ``H2Connection.receive_data`` and the three sends; for the agent's
:class:`edgeserve.agent.grpc.conn.Connection`, ``data_received`` and ``Stream.reply`` into a
transport that keeps what is written. Rounds alternate; the median and spread are printed::

    .venv/bin/python benchmarks/grpc_h2.py [--calls 5000] [--rounds 3]

Needs ``h2`` (the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
from edgeserve.agent.grpc.conn import Connection
from edgeserve.agent.grpc.stream import Stream

_HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/inference.GRPCInferenceService/ModelInfer"),
    (":authority", "127.0.0.1:8001"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-python/1.85"),
    ("grpc-accept-encoding", "identity,deflate,gzip"),
]
_REQUEST = b"\0\0\0\0\x40" + b"x" * 64
_ANSWER = b"y" * 48


class _Client:
    """An ``h2`` client making the request bytes and reading the answers."""

    def __init__(self, preface_to: Any) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.next_id = 1
        preface_to(self.conn.data_to_send())

    def request(self) -> tuple[int, bytes]:
        sid, self.next_id = self.next_id, self.next_id + 2
        self.conn.send_headers(sid, _HEADERS)
        self.conn.send_data(sid, _REQUEST, end_stream=True)
        return sid, self.conn.data_to_send()

    def read(self, data: bytes) -> bytes:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        return self.conn.data_to_send()


def _h2_round(calls: int) -> float:
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    client = _Client(server.receive_data)
    client.read(server.data_to_send())
    server.receive_data(client.conn.data_to_send())
    spent = 0.0
    for _ in range(calls):
        sid, data = client.request()
        started = time.perf_counter()
        for event in server.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        server.send_data(sid, b"\0\0\0\0\x30" + _ANSWER)
        server.send_headers(sid, [("grpc-status", "0")], end_stream=True)
        out = server.data_to_send()
        spent += time.perf_counter() - started
        server.receive_data(client.read(out))
    return spent / calls


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def close(self) -> None:
        pass


class _Server:
    """What a connection asks of its server, answering every call at once."""

    max_message_bytes = 64 << 20
    header_timeout_s = body_timeout_s = idle_timeout_s = 60.0

    def admit(self, conn: Any) -> bool:
        return True

    def forget(self, conn: Any) -> None:
        pass

    def completed(self, conn: Any) -> None:
        pass

    def open(self, stream: Stream) -> None:
        return None

    def run(self, stream: Stream, message: bytes = b"") -> None:
        stream.reply(_ANSWER)


async def _ours_round(calls: int) -> float:
    transport = _Transport()
    conn = Connection(_Server())  # type: ignore[arg-type]
    conn.connection_made(transport)
    client = _Client(conn.data_received)
    spent = 0.0
    for _ in range(calls):
        _, data = client.request()
        started = time.perf_counter()
        conn.data_received(data)
        out = b"".join(transport.out)
        spent += time.perf_counter() - started
        transport.out.clear()
        back = client.read(out)
        if back:
            conn.data_received(back)
            transport.out.clear()
    return spent / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    h2_us: list[float] = []
    ours_us: list[float] = []
    for _ in range(args.rounds):
        h2_us.append(_h2_round(args.calls) * 1e6)
        ours_us.append(asyncio.run(_ours_round(args.calls)) * 1e6)
    print(f"HTTP/2 server side of one unary gRPC call, {args.calls} calls x {args.rounds} rounds")
    print("  CPU per call: median (min-max) µs")
    for name, values in (("h2 (H2Connection)", h2_us), ("edgeserve Connection", ours_us)):
        print(f"  {name:22} {statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
