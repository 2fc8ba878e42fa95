"""Load generators that speak MQTT 3.1.1 over raw sockets: pre-encoded QoS 1 messages as fast
as the broker takes them (:func:`blast`), QoS 1 publishes one at a time from a callback
(:class:`RawPublisher`), and a subscription with a callback (:class:`RawSubscriber`, and
:class:`RawCounter` on it).

paho-mqtt costs ~0.2 ms of Python per QoS 1 publish (packet building, its queue, the PUBACK
callback), so four paho connections in one process publish ~5,000 messages/s on this machine:
the generator, not the fleet server, set the telemetry figure. Here every PUBLISH packet is
encoded before the clock starts and written in large chunks; a reader thread per connection
counts the PUBACKs. What is measured is then the broker and whoever consumes the messages.
Only what a benchmark needs: anonymous CONNECT, QoS 1 PUBLISH, PUBACK, SUBSCRIBE, DISCONNECT.

The protocol-level fleet benchmark simulates 100,000 devices in one process on the cores the
fleet server uses: with paho there, its two reports per device and the message counter took
more CPU than the server itself.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

__all__ = ["RawCounter", "RawPublisher", "RawSubscriber", "blast"]

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


def _publish(topic: str, payload: bytes, packet_id: int, retain: bool = False) -> bytes:
    kind = 0x33 if retain else 0x32
    return _packet(kind, _string(topic.encode()) + struct.pack("!H", packet_id) + payload)


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


class RawPublisher:
    """QoS 1 publishes, one call at a time from any thread, round robin over ``connections``;
    a reader thread per connection counts the PUBACKs, and a publish waits while
    ``_WINDOW`` of its connection's are unacknowledged (packet ids never wrap into them)."""

    def __init__(self, url: str, connections: int = 2, client_id: str = "bench-raw") -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 1883
        self._conns = [_Connection(host, port, f"{client_id}-{k}") for k in range(connections)]
        self._sent = [0] * connections
        self._locks = [threading.Lock() for _ in range(connections)]
        self._next = 0

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        k = self._next = (self._next + 1) % len(self._conns)
        conn = self._conns[k]
        with self._locks[k]:
            with conn._cond:
                while self._sent[k] - conn.acked >= _WINDOW:
                    if conn.error is not None:
                        raise conn.error
                    if not conn._cond.wait(30):
                        raise TimeoutError("broker stopped acknowledging")
            self._sent[k] += 1
            conn.sock.sendall(_publish(topic, payload, self._sent[k] % 65535 + 1, retain))

    def close(self, timeout_s: float = 30.0) -> None:
        """Wait for every PUBACK, then disconnect."""
        deadline = time.monotonic() + timeout_s
        for k, conn in enumerate(self._conns):
            with conn._cond:
                while conn.acked < self._sent[k] and conn.error is None:
                    if not conn._cond.wait(max(deadline - time.monotonic(), 0.0)):
                        break
            conn.close()


class RawSubscriber:
    """One subscription, each message handed to ``on_message(topic, payload, retained)`` on
    the reader thread. At QoS 1 every message is acknowledged after the callback returns, so
    the broker's in-flight window paces delivery to the callback and nothing is dropped; QoS 0
    for a callback that keeps up (a counter)."""

    def __init__(
        self,
        url: str,
        topic_filter: str,
        on_message: Callable[[str, bytes, bool], None],
        qos: int = 1,
        client_id: str = "bench-subscriber",
    ) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.on_message = on_message
        self.sock = socket.create_connection((host, port), timeout=30)
        variable = _string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 600)
        self.sock.sendall(_packet(0x10, variable + _string(client_id.encode())))
        if _read_exact(self.sock, 4)[3] != 0:
            raise ConnectionError("broker refused the subscriber")
        body = struct.pack("!H", 1) + _string(topic_filter.encode()) + bytes([qos])
        self.sock.sendall(_packet(0x82, body))
        suback = _read_exact(self.sock, 5)
        if suback[0] != 0x90 or suback[4] != qos:
            raise ConnectionError(f"broker refused the subscription: {suback!r}")
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = bytearray()
        pos = 0
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            acks = []
            while len(buf) - pos >= 2:  # whole packets from pos
                length, shift, i = 0, 0, pos + 1
                while i < len(buf):
                    byte = buf[i]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not byte & 0x80:
                        break
                else:
                    break  # the length itself is incomplete
                if len(buf) - i < length:
                    break
                kind, end = buf[pos], i + length
                if kind & 0xF0 == 0x30:  # PUBLISH
                    topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
                    payload_at = topic_end + (2 if kind & 0x06 else 0)
                    self.on_message(
                        buf[i + 2 : topic_end].decode(), bytes(buf[payload_at:end]), bool(kind & 1)
                    )
                    if kind & 0x06:
                        acks.append(b"\x40\x02" + bytes(buf[topic_end:payload_at]))
                pos = end
            if acks:
                try:
                    self.sock.sendall(b"".join(acks))
                except OSError:
                    return
            if pos > 1 << 20:
                del buf[:pos]
                pos = 0

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(_packet(0xE0, b""))
        self.sock.close()


class RawCounter(RawSubscriber):
    """Counts the live (not retained) messages on ``topic_filter`` by the topic's last level,
    while :attr:`active` (QoS 0)."""

    def __init__(self, url: str, topic_filter: str, client_id: str = "bench-counter") -> None:
        from collections import Counter

        self.counts: Counter[str] = Counter()
        self.active = False
        super().__init__(url, topic_filter, self._count, 0, client_id)

    def _count(self, topic: str, payload: bytes, retained: bool) -> None:
        if self.active and not retained:
            self.counts[topic.rsplit("/", 1)[1]] += 1
