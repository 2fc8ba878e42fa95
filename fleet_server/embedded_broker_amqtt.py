"""The amqtt side of the embedded broker: plugins that read Mosquitto's password and ACL files.

Imported only when Mosquitto is not installed (see :mod:`edgeserve.fleet_server.embedded_broker`).
amqtt loads plugins by dotted path and hands each its ``Config`` dataclass (amqtt 0.12 plugin API).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from edgeserve.fleet_server.embedded_broker import (
    acl_allows,
    parse_acl,
    read_password_file,
    verify_password,
)

__all__ = ["AclFileTopicPlugin", "PasswordFileAuthPlugin", "run_broker"]

_MODULE = __name__


class _Watched:
    """A file parsed again whenever its size or mtime changes (Mosquitto reloads on SIGHUP;
    here a changed file is simply noticed)."""

    def __init__(self, path: str | None, parse: Callable[[Path], Any]) -> None:
        self.path = Path(path) if path else None
        self._parse = parse
        self._stamp: tuple[int, int] | None = None
        self._value: Any = None

    def get(self) -> Any:
        """The parsed file (re-parsed if it changed), or None without a file."""
        if self.path is None:
            return None
        st = self.path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._value, self._stamp = self._parse(self.path), stamp
        return self._value


class PasswordFileAuthPlugin(BaseAuthPlugin):
    """Accepts a client whose username/password match the Mosquitto password file; anonymous
    clients only when no password file is configured (Mosquitto's ``allow_anonymous``). With a
    password file the client id must be the username (Mosquitto's
    ``use_username_as_clientid``, which renames instead; amqtt has no hook for that), so one
    device's credentials cannot take over another device's session."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._users = _Watched(self.config.password_file, read_password_file)
        self._users.get()  # a bad file fails at start, not at the first client

    async def authenticate(self, *, session: Session) -> bool | None:
        """True when the session's username/password match the file (or there is no file)."""
        users = self._users.get()
        if users is None:
            return True
        encoded = users.get(session.username or "")
        if session.client_id != session.username:
            return False
        return encoded is not None and verify_password(session.password or "", encoded)

    @dataclass
    class Config:
        password_file: str | None = None


class AclFileTopicPlugin(BaseTopicPlugin):
    """Mosquitto ACL semantics: publish needs ``write``; subscribe and delivery need ``read``."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._rules = _Watched(self.config.acl_file, lambda p: parse_acl(p.read_text()))
        self._rules.get()

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        """Whether the ACL lets this session publish to / subscribe to / receive ``topic``."""
        rules = self._rules.get()
        if rules is None:
            return True
        if session is None or topic is None:
            return False
        return acl_allows(
            rules,
            user=session.username,
            client_id=session.client_id or "",
            topic=topic,
            write=action == Action.PUBLISH,
            subscribe=action == Action.SUBSCRIBE,
        )

    @dataclass
    class Config:
        acl_file: str | None = None


async def run_broker(
    host: str,
    port: int,
    password_file: Path | None,
    acl_file: Path | None,
    stop: asyncio.Event,
    ready: threading.Event,
) -> None:
    """Run an amqtt broker on this loop until ``stop`` is set; set ``ready`` once listening."""
    config: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # only our two plugins: no $SYS publisher, no packet logger
        "plugins": {
            f"{_MODULE}.PasswordFileAuthPlugin": {
                "password_file": str(password_file) if password_file else None
            },
            f"{_MODULE}.AclFileTopicPlugin": {"acl_file": str(acl_file) if acl_file else None},
        },
    }
    broker = Broker(config, loop=asyncio.get_running_loop())
    await broker.start()
    ready.set()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()
