"""What the agent's HTTP/1.1 and gRPC servers share: a listening socket and the table of open
connections with its caps and deadline sweep.

A connection registers with :meth:`Listener.admit` when accepted. At ``max_connections`` the
connection that has gone longest without completing a request (and has none in progress) is
closed to admit the new one, so slow sockets cannot lock clients out; an optional per-address
cap bounds what one peer can hold. One timer checks every connection's deadlines
(:meth:`Peer.check_deadlines`) a few times per shortest timeout.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Callable
from typing import Protocol

__all__ = ["Listener", "Peer", "bound_socket"]

_BACKLOG = 1024


class Peer(Protocol):
    """What the listener needs of a connection."""

    peer: str  # the client's address ("" for a Unix socket)
    busy: bool  # a request is in progress (never evicted then)

    def check_deadlines(self, now: float) -> None: ...
    def close(self) -> None: ...
    def evict(self) -> None: ...


class Listener:
    """Accept connections made by ``factory`` on a TCP port, within the connection caps.

    Args:
        max_connections: open connections; at the cap the connection that has gone longest
            without completing a request (and has none in progress) is closed for the new one.
        idle_timeout_s: seconds a connection between requests may send nothing.
        header_timeout_s: seconds from a request's first byte until its headers are complete.
        body_timeout_s: seconds a request body may stop arriving.
        max_connections_per_peer: open connections from one address (0 = no cap); at the cap
            that address's longest-incomplete connection makes room.
        cap_loopback_peers: apply ``max_connections_per_peer`` to loopback clients too.
    """

    def __init__(
        self,
        *,
        max_connections: int = 1024,
        idle_timeout_s: float = 60.0,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 10.0,
        max_connections_per_peer: int = 0,
        cap_loopback_peers: bool = False,
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.cap_loopback_peers = cap_loopback_peers
        # Insertion order is the eviction order: a connection moves to the end each time it
        # completes a request, so the first entries have gone longest without completing one.
        self.connections: dict[Peer, None] = {}
        self._per_peer: dict[str, int] = {}
        self.evicted = 0  # connections closed to make room, since start
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    # connection bookkeeping (called by the connections) -------------------------------

    def admit(self, conn: Peer) -> bool:
        """Register a new connection, making room at a cap; False when there is none."""
        peer = conn.peer
        capped = self.max_connections_per_peer > 0 and (
            self.cap_loopback_peers or not _is_loopback(peer)
        )
        at_peer_cap = capped and self._per_peer.get(peer, 0) >= self.max_connections_per_peer
        if at_peer_cap and not self._evict(peer):
            return False
        if len(self.connections) >= self.max_connections and not self._evict(None):
            return False
        self.connections[conn] = None
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return True

    def _evict(self, peer: str | None) -> bool:
        for conn in self.connections:
            if not conn.busy and (peer is None or conn.peer == peer):
                conn.evict()
                self.evicted += 1
                return True
        return False

    def completed(self, conn: Peer) -> None:
        """``conn`` completed a request: it goes to the back of the eviction order."""
        if conn in self.connections:
            del self.connections[conn]
            self.connections[conn] = None

    def forget(self, conn: Peer) -> None:
        """``conn`` is closed (idempotent)."""
        if conn in self.connections:
            del self.connections[conn]
            left = self._per_peer.get(conn.peer, 1) - 1
            if left > 0:
                self._per_peer[conn.peer] = left
            else:
                self._per_peer.pop(conn.peer, None)

    def _sweep(self) -> None:
        # One timer for every connection (not one per connection): deadlines are checked a
        # few times per shortest timeout, so they hold to within a quarter of it.
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.connections):
            conn.check_deadlines(now)
        self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep_interval(self) -> float:
        shortest = min(self.idle_timeout_s, self.header_timeout_s, self.body_timeout_s)
        return min(max(shortest / 4, 0.05), 1.0)

    # lifecycle -------------------------------------------------------------------------

    async def listen(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int, *, reuse_port: bool
    ) -> int:
        """Bind and start accepting connections made by ``factory``; returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        sock = bound_socket(host, port, reuse_port=reuse_port)
        if sock is not None:
            self._server = await loop.create_server(factory, sock=sock, backlog=_BACKLOG)
        else:  # a host name: the loop resolves it (and binds every address it resolves to)
            self._server = await loop.create_server(
                factory,
                host,
                port,
                reuse_address=True,
                reuse_port=reuse_port or None,
                backlog=_BACKLOG,
            )
        self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let requests being handled finish (up to ``grace_s`` seconds), then
        close every connection."""
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        await self._server.wait_closed()


@functools.lru_cache(maxsize=4096)
def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == ""  # a Unix socket has no address: local


def bound_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket | None:
    """A listening socket bound to ``host`` when it is an IP address literal, else None.

    Binding it here, as the loop would, spares the loop's name lookup: uvloop resolves even a
    literal with getaddrinfo on libuv's thread pool, which starts four threads for the one
    call and imports the ``idna`` codec (0.4 MB of idle RSS together, measured with
    ``benchmarks/lean_start.py``).

    Raises:
        OSError: the address cannot be bound.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if getattr(address, "scope_id", None):
        return None  # a link-local address with a zone: left to the loop's resolver
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # as asyncio and uvloop do: "::" binds IPv6 only, not IPv4 through it as well
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
