"""Hostile clients against a real agent process: endless headers, slowloris, connection floods,
trickled bodies, Upgrade requests, pipelined garbage."""

from __future__ import annotations

import re
import resource
import socket
import time
from pathlib import Path

import httpx
import pytest
from support.agent import AgentProcess, start_agent
from support.hostile import endless_header, raise_fd_limit, slowloris

pytestmark = pytest.mark.slow


def _recv_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return out
        if not data:
            return out
        out += data


def test_agent_hostile_endless_header_is_cut_off_without_growing_the_agent(
    running_agent: AgentProcess,
) -> None:
    result = endless_header(running_agent.port, running_agent.process.pid, total_mib=256)
    # the agent answered 431 and closed long before 256 MiB went through
    assert result.reply.startswith(b"HTTP/1.1 431 "), result.reply[:200]
    assert b"connection: close" in result.reply
    assert result.sent_mib < 16
    assert result.growth_mb <= 8, result
    assert httpx.get(f"{running_agent.url}/v2/health/live").status_code == 200


def test_agent_hostile_complete_headers_over_the_limit_get_431(
    running_agent: AgentProcess,
) -> None:
    headers = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))  # 80 KB, complete
    with socket.create_connection(("127.0.0.1", running_agent.port), timeout=5) as sock:
        sock.sendall(b"GET /v2 HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n")
        assert _recv_all(sock).startswith(b"HTTP/1.1 431 ")


def test_agent_hostile_slowloris_does_not_lock_out_a_normal_client(
    running_agent: AgentProcess,
) -> None:
    # 1,500 sockets against max_connections = 1024, each trickling a header byte every 2 s and
    # reconnecting when closed: the normal client's fresh connections still get answered.
    assert raise_fd_limit(2100) >= 2000, "the test needs RLIMIT_NOFILE >= 2000 (ulimit -n)"
    result = slowloris(running_agent.port, attackers=1500, interval_s=2.0, requests=60)
    assert result.attacker_connects >= 1500
    assert result.ok_ratio >= 0.95, result
    assert running_agent.process.poll() is None


def test_agent_hostile_agent_raises_its_open_file_limit_to_fit_max_connections(
    state_dir: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024 + 256:
        pytest.fail(f"hard RLIMIT_NOFILE {hard} is below what max_connections = 1024 needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # the agent inherits 512
    try:
        agent = start_agent(state_dir)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with agent:
        limits = Path(f"/proc/{agent.process.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert int(line.split()[3]) >= 1024 + 256, line


def test_agent_hostile_header_and_body_deadlines(state_dir: Path) -> None:
    config = {"server": {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "idle_timeout_s": 30.0}}
    with start_agent(state_dir, config=config) as agent:
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /v2 HTTP/1.1\r\nhost: x\r\n")
            reply = b""
            while not reply and time.monotonic() - started < 5:
                # keep sending: bytes arriving do not extend the header deadline
                sock.settimeout(0.2)
                try:
                    reply = sock.recv(4096)
                except TimeoutError:
                    sock.sendall(b"x-a: b\r\n")
            reply += _recv_all(sock)
            assert reply.startswith(b"HTTP/1.1 408 "), reply
            assert b"headers not complete within 0.5 s" in reply
            assert time.monotonic() - started < 3
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"
            )
            reply = _recv_all(sock)
            assert reply.startswith(b"HTTP/1.1 408 ") and b"body" in reply, reply
        # a slow but steady body is fine: bytes keep arriving within body_timeout_s
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
            body = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
            body += b'"data": [1, 2, 3, 4]}]}'
            sock.sendall(
                b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n" % len(body)
            )
            for i in range(0, len(body), 20):
                time.sleep(0.2)
                sock.sendall(body[i : i + 20])
            assert _recv_all(sock).startswith(b"HTTP/1.1 200 ")
        # bare line ends between requests start the header deadline too
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
            started = time.monotonic()
            reply = b""
            while not reply and time.monotonic() - started < 5:
                sock.sendall(b"\r\n")
                sock.settimeout(0.2)
                try:
                    reply = sock.recv(4096)  # what the agent sent before closing, if anything
                except TimeoutError:
                    continue
            assert reply.startswith(b"HTTP/1.1 408 "), reply
            assert time.monotonic() - started < 3
        # an idle keep-alive connection is not subject to the header deadline
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
            time.sleep(1.0)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            assert _recv_all(sock).startswith(b"HTTP/1.1 200 ")


def test_agent_hostile_at_the_cap_the_longest_incomplete_connection_makes_room(
    state_dir: Path,
) -> None:
    with start_agent(state_dir, config={"server": {"max_connections": 4}}) as agent:
        port = agent.port
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        for sock in idle:
            sock.sendall(b"GET /v2 HTT")  # incomplete, never finished
            time.sleep(0.05)
        served = socket.create_connection(("127.0.0.1", port), timeout=5)
        served.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        assert served.recv(4096).startswith(b"HTTP/1.1 200")
        # a fifth connection: the one that has gone longest without completing a request
        # (the first incomplete one) is closed; the one that just completed one stays
        assert httpx.get(f"{agent.url}/v2/health/live").status_code == 200
        assert _recv_all(idle[0], 2) == b""
        served.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        assert served.recv(4096).startswith(b"HTTP/1.1 200")
        for sock in [served, *idle]:
            sock.close()


def test_agent_hostile_per_peer_cap(state_dir: Path) -> None:
    config = {"server": {"max_connections_per_peer": 2, "cap_loopback_peers": True}}
    with start_agent(state_dir, config=config) as agent:
        first = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        second = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        time.sleep(0.2)
        third = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        third.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert _recv_all(third).startswith(b"HTTP/1.1 200")
        assert _recv_all(first, 2) == b""  # made room for its own peer's new connection
        for sock in (first, second, third):
            sock.close()
    # loopback is exempt by default
    with start_agent(state_dir, config={"server": {"max_connections_per_peer": 1}}) as agent:
        held = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        time.sleep(0.2)
        assert httpx.get(f"{agent.url}/v2/health/live").status_code == 200
        held.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert _recv_all(held).startswith(b"HTTP/1.1 200")
        held.close()


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        (b"connection: upgrade\r\nupgrade: websocket\r\n", b"websocket"),
        (
            b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
            b"http2-settings: AAMAAABkAAQAAP__\r\n",
            b"h2c",
        ),
    ],
    ids=["websocket", "h2c"],
)
def test_agent_hostile_upgrade_is_answered_then_closed(
    running_agent: AgentProcess, headers: bytes, named: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", running_agent.port), timeout=5) as sock:
        sock.sendall(b"GET /v2 HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n")
        reply = _recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert named in reply and b"connection: close" in reply


def test_agent_hostile_connect_is_answered(running_agent: AgentProcess) -> None:
    with socket.create_connection(("127.0.0.1", running_agent.port), timeout=5) as sock:
        sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        reply = _recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 400 ") and b"CONNECT" in reply, reply


def test_agent_hostile_pipelined_requests_are_answered_before_the_error(
    running_agent: AgentProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", running_agent.port), timeout=5) as sock:
        sock.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GET /v2/models/linear HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GARBAGE\x00\r\n\r\n"
        )
        reply = _recv_all(sock)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)
    assert statuses == [b"200", b"200", b"400"], reply
