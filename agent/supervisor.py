"""Several serving processes on one port, under one supervisor (``[server] processes = N``).

One Python process serves with one event loop that parses and encodes every request under one
GIL, so it cannot keep more than about one core busy. The supervisor starts N serving
processes (``python -c`` with this module's :func:`child_main`, the configuration pickled on
stdin), each a whole agent — its own runtimes, batchers, event loop — listening on the same
port with ``SO_REUSEPORT``, so the kernel spreads new connections over them (Linux
``socket(7)``). They share the one model store on disk: each watches it (``poll_interval_s``)
and hot-swaps on its own, so an activation by any process or by ``edgeserve agent activate``
reaches all of them. Every process serves the gRPC port too, shared the same way. Process 0
alone runs fleet sync (one MQTT session, one installer). Metrics add up across processes
through prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a directory the
supervisor owns).

The supervisor holds the port (and the gRPC port) bound, not listening, for its whole life, so
port 0 resolves to one port for all children and a restart finds it free. A child that dies is
restarted (after a pause that grows while it keeps dying young); SIGTERM or SIGINT stops every
child cleanly and then the supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from edgeserve.agent.config import AgentConfig

from edgeserve.errors import ConfigError, EdgeServeError

__all__ = ["child_main", "supervise"]

log = logging.getLogger(__name__)

_CHILD = "from edgeserve.agent.supervisor import child_main; child_main()"
_READY = "edgeserve agent ready on "
_STOP_TIMEOUT_S = 15.0  # seconds a child may take to drain and stop after SIGTERM
_YOUNG_S = 10.0  # a child that dies sooner than this after starting backs off longer
_MAX_BACKOFF_S = 10.0


@dataclass
class _Child:
    index: int
    config: AgentConfig
    process: subprocess.Popen | None = None
    started: float = 0.0
    ready: threading.Event = field(default_factory=threading.Event)
    ready_line: str = ""
    backoff_s: float = 0.5
    restart_at: float = 0.0


def supervise(config: AgentConfig) -> None:
    """Run ``config.server.processes`` serving processes until SIGTERM/SIGINT.

    Prints one ready line on stdout once every process serves.

    Args:
        config: the configuration (``server.processes`` > 1).

    Raises:
        ConfigError: the port cannot be bound, or a serving process failed before it was
            ready (its own error line is on stderr).
    """
    holder, port = _hold_port(config.server.host, config.server.port)
    grpc_holder = None
    if config.server.grpc_port:
        try:
            grpc_holder, _ = _hold_port(config.server.host, config.server.grpc_port, "for gRPC ")
        except ConfigError:
            holder.close()
            raise
    own_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    metrics_dir = (
        tempfile.mkdtemp(prefix="edgeserve-metrics-")
        if own_dir
        else os.environ["PROMETHEUS_MULTIPROC_DIR"]
    )
    _clear_metrics(metrics_dir)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    children = [_Child(i, _child_config(config, i, port)) for i in range(config.server.processes)]
    stopping = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stopping.set())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        for child in children:
            _start(child, env)
        _wait_ready(children, stopping)
        if stopping.is_set():
            return
        print(
            children[0].ready_line.replace(" models [", f" processes {len(children)} models [", 1),
            flush=True,
        )
        while not stopping.wait(0.2):
            for child in children:
                _keep_alive(child, env, metrics_dir)
    finally:
        _stop_all(children, metrics_dir)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        holder.close()
        if grpc_holder is not None:
            grpc_holder.close()
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _hold_port(host: str, port: int, what: str = "") -> tuple[socket.socket, int]:
    """Bind (without listening) the serving address with ``SO_REUSEPORT``: a bound socket that
    does not listen receives no connections, yet keeps the port for the children."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        raise ConfigError(f"cannot listen {what}on {where}: {exc.strerror or exc}") from exc
    return sock, int(sock.getsockname()[1])


def _child_config(config: AgentConfig, index: int, port: int) -> AgentConfig:
    server = replace(config.server, port=port)
    return replace(config, server=server, fleet=config.fleet if index == 0 else None)


def _clear_metrics(directory: str) -> None:
    # prometheus_client's multiprocess docs: the directory must be emptied between runs
    for path in Path(directory).glob("*.db"):
        with contextlib.suppress(OSError):
            path.unlink()


def _start(child: _Child, env: dict[str, str]) -> None:
    child.ready.clear()
    child.started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**env, "EDGESERVE_PROCESS_INDEX": str(child.index)},
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    with contextlib.suppress(BrokenPipeError):
        process.stdin.buffer.write(pickle.dumps(child.config))
        process.stdin.close()
    child.process = process
    threading.Thread(
        target=_read_stdout, args=(child, process.stdout), daemon=True, name="edgeserve-child-out"
    ).start()


def _read_stdout(child: _Child, stream: IO[str]) -> None:
    """Forward a child's stdout; its ready line marks it ready instead."""
    for line in stream:
        if line.startswith(_READY) and not child.ready.is_set():
            child.ready_line = line.rstrip("\n")
            child.ready.set()
        else:
            sys.stdout.write(line)
            sys.stdout.flush()


def _wait_ready(children: list[_Child], stopping: threading.Event) -> None:
    for child in children:
        while not child.ready.wait(0.05):
            if stopping.is_set():
                return
            assert child.process is not None
            code = child.process.poll()
            if code is not None:
                raise ConfigError(
                    f"serving process {child.index} exited with code {code} before it was ready"
                )


def _keep_alive(child: _Child, env: dict[str, str], metrics_dir: str) -> None:
    """Restart ``child`` if it died, pausing longer while it keeps dying young."""
    assert child.process is not None
    now = time.monotonic()
    if child.restart_at:
        if now >= child.restart_at:
            child.restart_at = 0.0
            _start(child, env)
        return
    code = child.process.poll()
    if code is None:
        return
    _mark_dead(child.process.pid, metrics_dir)
    young = now - child.started < _YOUNG_S
    child.backoff_s = min(child.backoff_s * 2, _MAX_BACKOFF_S) if young else 0.5
    log.warning(
        "serving process %d (pid %d) exited with code %d; restarting in %.1f s",
        child.index,
        child.process.pid,
        code,
        child.backoff_s,
    )
    print(
        f"serving process {child.index} exited with code {code}; restarting",
        file=sys.stderr,
        flush=True,
    )
    child.restart_at = now + child.backoff_s


def _mark_dead(pid: int, metrics_dir: str) -> None:
    # live gauges (pending requests, readiness) of a dead process must stop counting
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)


def _stop_all(children: list[_Child], metrics_dir: str) -> None:
    running = [c.process for c in children if c.process is not None and c.process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for process in running:
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in children:
        if child.process is not None:
            _mark_dead(child.process.pid, metrics_dir)


def child_main() -> None:
    """Entry point of one serving process: the configuration arrives pickled on stdin (from
    the supervisor, which runs the same interpreter and code)."""
    config = pickle.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    _die_with_parent()
    from edgeserve.agent.runner import run_process

    try:
        run_process(config, shared_port=True)
    except EdgeServeError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def _die_with_parent() -> None:
    """Have the kernel send SIGTERM to this serving process when its supervisor dies, even by
    SIGKILL (Linux ``prctl(PR_SET_PDEATHSIG)``), so no orphan keeps serving the port."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the supervisor died before the call
        os.kill(os.getpid(), signal.SIGTERM)
