"""Hostile HTTP clients for a real agent process, shared by tests and ``benchmarks/hostile.py``.

- :func:`endless_header`: one header value that never ends (``X-Big: aaaa...`` with no line end),
  sent in 1 MiB writes, with the agent's RSS before and after;
- :func:`slowloris`: many connections that each send one header byte every few seconds (and
  reconnect when closed) while a normal client sends requests on fresh connections, counting how
  many of the normal client's requests were answered;
- :func:`raise_fd_limit`: room for that many sockets in the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HeaderResult",
    "SlowlorisResult",
    "endless_header",
    "raise_fd_limit",
    "rss_mb",
    "slowloris",
]


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (``VmRSS`` from ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft open-file limit to ``wanted`` (at most the hard limit).

    Returns:
        The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


@dataclass(frozen=True)
class HeaderResult:
    """What an endless header did: MiB sent before the agent stopped it, its reply, RSS."""

    sent_mib: int
    reply: bytes
    rss_before_mb: float
    rss_after_mb: float

    @property
    def growth_mb(self) -> float:
        """RSS growth of the agent, in MB."""
        return self.rss_after_mb - self.rss_before_mb


def endless_header(port: int, pid: int, total_mib: int = 256) -> HeaderResult:
    """Send ``GET /v2`` with a header value of ``total_mib`` MiB and no line end.

    Stops at the first failed write (the agent closed the connection); the reply is whatever the
    agent wrote before closing (b"" when nothing).
    """
    before = rss_mb(pid)
    chunk = b"a" * (1 << 20)
    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"GET /v2 HTTP/1.1\r\nhost: agent\r\nx-big: ")
            for _ in range(total_mib):
                sock.sendall(chunk)
                sent += 1
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sock.settimeout(5)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
    time.sleep(0.2)
    return HeaderResult(sent, reply, before, rss_mb(pid))


@dataclass(frozen=True)
class SlowlorisResult:
    """A slowloris run: the normal client's requests, answered or not, and the attack size."""

    attackers: int
    attacker_connects: int
    normal_sent: int
    normal_ok: int
    seconds: float

    @property
    def ok_ratio(self) -> float:
        """Share of the normal client's requests answered with 200."""
        return self.normal_ok / self.normal_sent if self.normal_sent else 0.0


async def _attacker(port: int, interval_s: float, stop: asyncio.Event, connects: list[int]) -> None:
    line = b"GET /v2/health/live HTTP/1.1\r\nhost: agent\r\nx-slow: " + b"a" * 100_000
    while not stop.is_set():
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            connects[0] += 1
            for byte in line:
                writer.write(bytes([byte]))
                await writer.drain()
                # a closed connection shows up as EOF on read; wait for it or the next byte
                with contextlib.suppress(asyncio.TimeoutError):
                    if await asyncio.wait_for(reader.read(4096), interval_s) == b"":
                        break
                if stop.is_set():
                    break
        except OSError:
            await asyncio.sleep(0.05)
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(0.05)  # reconnect at once, as an attacker would


async def _normal(port: int, count: int, every_s: float, timeout_s: float) -> tuple[int, int]:
    ok = 0
    request = b"GET /v2/health/live HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n"
    for _ in range(count):
        started = time.monotonic()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout_s
            )
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout_s)
            ok += head.startswith(b"HTTP/1.1 200")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(max(every_s - (time.monotonic() - started), 0))
    return count, ok


async def _slowloris(
    port: int, attackers: int, interval_s: float, warmup_s: float, requests: int, every_s: float
) -> SlowlorisResult:
    stop = asyncio.Event()
    connects = [0]
    tasks = [
        asyncio.ensure_future(_attacker(port, interval_s, stop, connects)) for _ in range(attackers)
    ]
    started = time.monotonic()
    try:
        await asyncio.sleep(warmup_s)  # every slot the attack can take is taken
        sent, ok = await _normal(port, requests, every_s, timeout_s=5.0)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return SlowlorisResult(attackers, connects[0], sent, ok, time.monotonic() - started)


def slowloris(
    port: int,
    attackers: int = 1500,
    interval_s: float = 2.0,
    warmup_s: float = 5.0,
    requests: int = 60,
    every_s: float = 0.25,
) -> SlowlorisResult:
    """Run ``attackers`` slow connections (one header byte every ``interval_s``) against the
    agent on ``port``; after ``warmup_s``, a normal client sends ``requests`` requests, one
    every ``every_s`` seconds, each on a new connection, with a 5 s timeout each."""
    raise_fd_limit(attackers + 512)
    return asyncio.run(_slowloris(port, attackers, interval_s, warmup_s, requests, every_s))
