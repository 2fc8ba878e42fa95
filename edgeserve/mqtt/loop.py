"""One network thread for many MQTT clients, with ``selectors`` (paho's external-loop API).

By default each :class:`~edgeserve.mqtt.client.MqttClient` runs paho's own network thread;
adding clients to a shared :class:`MqttLoop` runs them all on one thread, which is how a
simulation runs 1,000 devices in one process.
"""

from __future__ import annotations

import contextlib
import logging
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

from edgeserve.mqtt.client import MqttClient, call_safely

__all__ = ["MqttLoop"]

log = logging.getLogger(__name__)


class MqttLoop:
    """One network thread for many :class:`MqttClient` s (paho's external event loop API:
    ``on_socket_open/close/register_write/unregister_write`` + ``loop_read/write/misc``).

    Reconnects each client with its own exponential backoff (with jitter so 1,000 devices do
    not reconnect in lockstep after a broker restart). A TCP connect blocks the loop briefly
    (paho connects synchronously; bounded by a 2 s ``connect_timeout`` here), so the shared
    loop is meant for simulations and brokers on a fast network; a real device uses its own
    paho thread.
    """

    def __init__(self, name: str = "mqtt-loop") -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._clients: dict[int, _Slot] = {}
        self._pending: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, client: MqttClient) -> None:
        """Drive ``client`` from this loop (called by :meth:`MqttClient.start`)."""
        slot = _Slot(client, client.config.reconnect_min_s, client.config.reconnect_max_s)
        pc = client.paho
        pc.on_socket_open = lambda c, u, s: self._call(lambda: self._register(slot, s))
        pc.on_socket_close = lambda c, u, s: self._call(lambda: self._unregister(s))
        pc.on_socket_register_write = lambda c, u, s: self._call(lambda: self._want_write(s, True))
        pc.on_socket_unregister_write = lambda c, u, s: self._call(
            lambda: self._want_write(s, False)
        )
        self._call(lambda: self._clients.__setitem__(id(client), slot))

    def remove(self, client: MqttClient, timeout_s: float = 5.0) -> None:
        """Stop driving ``client`` once its DISCONNECT is written (or ``timeout_s``)."""
        done = threading.Event()

        def drop() -> None:
            slot = self._clients.pop(id(client), None)
            if slot is not None:
                slot.stopped = True
                sock = client.paho.socket()
                if sock is not None:
                    self._unregister(sock)
                    with contextlib.suppress(OSError):
                        client.paho.loop_write()
            done.set()

        self._call(drop)
        done.wait(timeout_s)

    def close(self) -> None:
        """Stop the loop thread (clients should be stopped first)."""
        self._running = False
        self._wake()
        self._thread.join(timeout=5)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---------------------------------------------------------------- internals

    def _call(self, func: Callable[[], None]) -> None:
        if threading.current_thread() is self._thread:
            func()
            return
        with self._lock:
            self._pending.append(func)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full wake pipe already wakes the loop
            self._wake_w.send(b"\0")

    def _register(self, slot: _Slot, sock: Any) -> None:
        try:
            self._sel.register(sock, selectors.EVENT_READ, slot)
        except (KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ, slot)

    def _unregister(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)

    def _want_write(self, sock: Any, on: bool) -> None:
        try:
            key = self._sel.get_key(sock)
        except (KeyError, ValueError):
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        self._sel.modify(sock, events, key.data)

    def _run(self) -> None:
        last_misc = 0.0
        while self._running:
            for key, events in self._sel.select(timeout=0.25):
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                    continue
                slot: _Slot = key.data
                if slot.stopped:
                    continue
                pc = slot.client.paho
                try:
                    if events & selectors.EVENT_READ:
                        pc.loop_read()
                    if events & selectors.EVENT_WRITE and not slot.stopped:
                        pc.loop_write()
                except Exception:  # one client's failure must not stop the others
                    log.exception("mqtt loop: client %s failed", slot.client.config.client_id)
            with self._lock:
                pending, self._pending = self._pending, []
            for func in pending:
                call_safely(func)
            now = time.monotonic()
            if now - last_misc >= 0.5:
                last_misc = now
                for slot in list(self._clients.values()):
                    try:
                        self._service(slot, now)
                    except Exception:
                        log.exception("mqtt loop: client %s", slot.client.config.client_id)

    def _service(self, slot: _Slot, now: float) -> None:
        pc = slot.client.paho
        if slot.stopped:
            return
        if pc.socket() is not None and pc.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            if slot.client.connected:
                slot.delay = slot.min_s
            return
        if now < slot.next_try:
            return
        try:
            pc.reconnect()
        except OSError as exc:
            slot.client.last_error = f"connect failed: {exc}"
            pc_sock = pc.socket()
            if pc_sock is not None:
                self._unregister(pc_sock)
        slot.next_try = now + slot.delay * (0.5 + random.random())
        slot.delay = min(slot.delay * 2, slot.max_s)


class _Slot:
    def __init__(self, client: MqttClient, min_s: float, max_s: float) -> None:
        self.client = client
        self.min_s = min_s
        self.max_s = max_s
        self.delay = min_s
        self.next_try = 0.0
        self.stopped = False
