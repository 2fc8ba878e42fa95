"""An MQTT broker for one machine: Mosquitto when it is installed, else amqtt in a thread.

``edgeserve quickstart`` and ``edgeserve fleet serve --embedded-broker`` need a broker on a machine
where nobody installed one. Mosquitto is preferred when it is on PATH (the broker production
setups run, with persistence); otherwise amqtt, a pure-Python MQTT 3.1.1 broker, runs on its own
asyncio loop in a daemon thread of the calling process.

Both take the same inputs: a Mosquitto password file (``user:$7$...`` PBKDF2-SHA512, or the older
``$6$`` salted SHA-512; see mosquitto_passwd(1)) and a Mosquitto ACL file (``user``, ``topic
[read|write|readwrite] T``, ``pattern ... %u/%c``; see mosquitto.conf(5), "acl_file"), so what
``edgeserve fleet broker-config`` writes works with either broker. ``users`` (plain passwords) is
a shortcut that writes such a password file.

With a password file, a username can only ever hold its own client id: Mosquitto gets
``use_username_as_clientid true``, and amqtt the same rule, applied (with the credentials
checked) before amqtt touches any session (:class:`.amqtt_broker.FleetBroker`).
So the holder of one device's credentials cannot disconnect another device by taking over its
client id (MQTT 3.1.1 section 3.1.4, step 2).

Limits of the amqtt fallback, documented: MQTT 3.1.1 only (no MQTT 5, no ``$share`` shared
subscriptions) and retained messages kept in memory only (lost when the process exits).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeserve.errors import ConfigError, UnavailableError

from .passwords import write_password_file

__all__ = ["EmbeddedBroker", "mosquitto_binary", "start_embedded_broker"]

Kind = Literal["auto", "mosquitto", "amqtt"]
_START_TIMEOUT_S = 10.0


def mosquitto_binary() -> str | None:
    """The mosquitto executable, if installed (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():
        found = "/usr/sbin/mosquitto"
    return found


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_for_port(host: str, port: int, timeout_s: float, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise UnavailableError(f"the MQTT broker exited before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise UnavailableError(f"the MQTT broker is not listening on {host}:{port} after {timeout_s}s")


@dataclass
class EmbeddedBroker:
    """A running broker. ``stop()`` ends it (idempotent); also a context manager."""

    kind: str
    host: str
    port: int
    workdir: Path
    _process: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop_event: asyncio.Event | None = None
    _own_workdir: bool = False
    _stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``, the form every edgeserve config takes."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The Mosquitto process id, or None for the in-process amqtt broker."""
        return self._process.pid if self._process is not None else None

    def reload(self) -> None:
        """Pick up changes to the password and ACL files (after ``fleet device add``).

        Mosquitto re-reads both on SIGHUP (mosquitto(8), "Signals"); the amqtt plugins notice a
        changed file by itself (size and mtime are checked on every connection/ACL check), so
        this is a no-op there.
        """
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker and wait for it; remove the work directory if we made it."""
        if self._stopped:
            return
        self._stopped = True
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._loop is not None and self._stop_event is not None and self._thread is not None:
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(timeout_s)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded_broker(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    users: Mapping[str, str] | None = None,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    kind: Kind = "auto",
    workdir: Path | None = None,
) -> EmbeddedBroker:
    """Start an MQTT broker listening on ``host:port`` and return once it accepts connections.

    Args:
        host: address to bind; loopback by default.
        port: TCP port; 0 picks a free one (read it back from ``.port``).
        users: plain ``{username: password}``; written as a password file. Exclusive with
            ``password_file``. With neither, anonymous clients are allowed.
        password_file: a Mosquitto password file.
        acl_file: a Mosquitto ACL file; without it every client may use every topic.
        kind: ``auto`` (Mosquitto when installed, else amqtt), ``mosquitto`` or ``amqtt``.
        workdir: where config, persistence and logs go; a temp dir (removed on stop) if None.

    Returns:
        The running :class:`EmbeddedBroker`.

    Raises:
        ConfigError: conflicting arguments, unreadable password/ACL file, Mosquitto asked for
            but not installed.
        UnavailableError: the broker did not start listening.
    """
    if users is not None and password_file is not None:
        raise ConfigError("give either users or password_file, not both")
    for label, path in (("password file", password_file), ("ACL file", acl_file)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"broker {label} {path} does not exist")
    binary = mosquitto_binary()
    if kind == "mosquitto" and binary is None:
        raise ConfigError("kind='mosquitto' but mosquitto is not installed")
    own = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="edgeserve-broker-")) if workdir is None else workdir
    wd.mkdir(parents=True, exist_ok=True)
    if users is not None:
        password_file = write_password_file(wd / "passwd", users)
    use_mosquitto = binary is not None and kind != "amqtt"
    port = port or _free_port(host)
    try:
        if use_mosquitto and binary is not None:
            broker = _start_mosquitto(binary, host, port, wd, password_file, acl_file)
        else:
            broker = _start_amqtt(host, port, wd, password_file, acl_file)
    except BaseException:
        if own:
            shutil.rmtree(wd, ignore_errors=True)
        raise
    broker._own_workdir = own
    return broker


def _start_mosquitto(
    binary: str, host: str, port: int, wd: Path, password_file: Path | None, acl_file: Path | None
) -> EmbeddedBroker:
    lines = [
        f"listener {port} {host}",
        # as root mosquitto drops to user "mosquitto", which cannot read our files
        *(["user root"] if os.geteuid() == 0 else []),
        "persistence true",
        f"persistence_location {wd}/",
        f"log_dest file {wd / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if password_file is not None:
        lines += [
            "allow_anonymous false",
            f"password_file {Path(password_file).resolve()}",
            # a username can only hold its own client id (see files.mosquitto_conf_text)
            "use_username_as_clientid true",
        ]
    else:
        lines.append("allow_anonymous true")
    if acl_file is not None:
        lines.append(f"acl_file {Path(acl_file).resolve()}")
    conf = wd / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    broker = EmbeddedBroker("mosquitto", host, port, wd, _process=proc)
    try:
        _wait_for_port(host, port, _START_TIMEOUT_S, alive=lambda: proc.poll() is None)
    except BaseException:
        broker.stop()
        raise
    return broker


def _start_amqtt(
    host: str, port: int, wd: Path, password_file: Path | None, acl_file: Path | None
) -> EmbeddedBroker:
    try:
        from .amqtt_broker import run_broker
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"no MQTT broker available: mosquitto is not installed and {exc.name} is missing "
            "(pip install 'edgeserve-toolkit[fleet]')"
        ) from exc
    ready = threading.Event()
    state: dict[str, Any] = {}

    def target() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            state["loop"], state["stop"] = asyncio.get_running_loop(), stop
            await run_broker(host, port, password_file, acl_file, stop, ready)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the starting thread below
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, name=f"edgeserve-amqtt-{port}", daemon=True)
    thread.start()
    if not ready.wait(_START_TIMEOUT_S) or "error" in state:
        error = state.get("error")
        raise UnavailableError(f"the embedded amqtt broker did not start on {host}:{port}: {error}")
    # no TCP probe here: amqtt leaks the socket of a connection that sends no CONNECT, and
    # `ready` is only set once Broker.start() has bound the listener.
    return EmbeddedBroker(
        "amqtt", host, port, wd, _thread=thread, _loop=state["loop"], _stop_event=state["stop"]
    )
