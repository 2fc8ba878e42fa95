"""A load generator that publishes pre-encoded MQTT 3.1.1 QoS 1 messages over raw sockets.

paho-mqtt costs ~0.2 ms of Python per QoS 1 publish (packet building, its queue, the PUBACK
callback), so four paho connections in one process publish ~5,000 messages/s on this machine:
the generator, not the fleet server, set the telemetry figure. Here every PUBLISH packet is
encoded before the clock starts and written in large chunks; a reader thread per connection
counts the PUBACKs. What is measured is then the broker and whoever consumes the messages.
Only what a benchmark needs: anonymous CONNECT, QoS 1 PUBLISH, PUBACK, DISCONNECT.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

__all__ = ["blast"]

_CHUNK = 256  # packets per write
_WINDOW = 4096  # unacknowledged packets per connection (packet ids must not wrap into them)


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: bytes) -> bytes:
    return struct.pack("!H", len(text)) + text


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _length(len(body)) + body


def _publish(topic: str, payload: bytes, packet_id: int) -> bytes:
    return _packet(0x32, _string(topic.encode()) + struct.pack("!H", packet_id) + payload)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


class _Connection:
    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        variable = _string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60)
        self.sock.sendall(_packet(0x10, variable + _string(client_id.encode())))
        connack = _read_exact(self.sock, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: {connack!r}")
        self.acked = 0
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _read_acks(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
                whole = len(buf) // 4 * 4  # PUBACK is 4 bytes: 0x40 0x02 id id
                if any(buf[i] != 0x40 for i in range(0, whole, 4)):
                    raise ConnectionError("unexpected packet from the broker")
                with self._cond:
                    self.acked += whole // 4
                    self._cond.notify_all()
                buf = buf[whole:]
        except OSError:
            return
        except BaseException as exc:  # reported by send()
            self.error = exc
            with self._cond:
                self._cond.notify_all()

    def send(self, packets: Sequence[bytes], deadline: float, rate_per_s: float = 0.0) -> None:
        sent = 0
        t0 = time.monotonic()
        while sent < len(packets):
            if rate_per_s > 0:  # paced: chunk n leaves at n * CHUNK / rate
                time.sleep(max(0.0, t0 + sent / rate_per_s - time.monotonic()))
            with self._cond:
                while sent - self.acked > _WINDOW - _CHUNK:
                    if self.error is not None:
                        raise self.error
                    if not self._cond.wait(max(deadline - time.monotonic(), 0.0)):
                        raise TimeoutError("broker stopped acknowledging")
            self.sock.sendall(b"".join(packets[sent : sent + _CHUNK]))
            sent += len(packets[sent : sent + _CHUNK])
        with self._cond:
            while self.acked < len(packets):
                if self.error is not None:
                    raise self.error
                if not self._cond.wait(max(deadline - time.monotonic(), 0.0)):
                    raise TimeoutError("broker stopped acknowledging")

    def close(self) -> None:
        try:
            self.sock.sendall(_packet(0xE0, b""))
        finally:
            self.sock.close()


def blast(
    url: str,
    messages: Sequence[tuple[str, bytes]],
    connections: int = 2,
    timeout_s: float = 120.0,
    on_start: Callable[[], None] | None = None,
    rate_per_s: float = 0.0,
) -> float:
    """Publish ``(topic, payload)`` messages at QoS 1, round robin over ``connections``
    anonymous connections; returns the seconds from the first write to the last PUBACK.
    ``on_start`` is called just before the first write (after connecting and encoding);
    ``rate_per_s`` > 0 paces the messages at that total rate instead of as fast as possible."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    conns = [_Connection(host, port, f"bench-blast-{k}") for k in range(connections)]
    shares = [
        [_publish(t, p, i % 65535 + 1) for i, (t, p) in enumerate(messages[k::connections])]
        for k in range(connections)
    ]
    errors: list[BaseException] = []
    if rate_per_s > 0:
        timeout_s += len(messages) / rate_per_s
    deadline = time.monotonic() + timeout_s

    def run(k: int) -> None:
        try:
            conns[k].send(shares[k], deadline, rate_per_s / connections)
        except BaseException as exc:
            errors.append(exc)

    if on_start is not None:
        on_start()
    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError(f"publishing failed: {errors[0]}")
    return elapsed
