"""The amqtt side of the embedded broker: plugins that read Mosquitto's password and ACL files.

Imported only when Mosquitto is not installed (see :mod:`edgeserve.fleet_server.broker.embedded`).
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
from amqtt.errors import AMQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from edgeserve.fleet_server.broker.acl import acl_allows, parse_acl
from edgeserve.fleet_server.broker.passwords import read_password_file, verify_password

__all__ = ["AclFileTopicPlugin", "FleetBroker", "PasswordFileAuthPlugin", "run_broker"]

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
    clients only when no password file is configured (Mosquitto's ``allow_anonymous``)."""

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


class FleetBroker(Broker):
    """amqtt's broker with Mosquitto's ``use_username_as_clientid`` when clients log in.

    amqtt 0.12 acts on a CONNECT's client id before it authenticates: a clean session deletes
    the existing session of that id (its subscriptions), a persistent one adopts it, and a
    connected one is taken over (``Broker._initialize_client_session`` and
    ``_handle_client_session``). So device A's credentials, or none, with device B's client id
    would cut device B off. Here the client id becomes the username first and the credentials
    are checked before any session is touched; a refused client gets CONNACK "not authorised"
    (MQTT 3.1.1 section 3.2.2.3, return code 5) and nothing else changes.
    """

    def __init__(self, *args: Any, username_is_client_id: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._username_is_client_id = username_is_client_id

    async def _initialize_client_session(  # type: ignore[override]
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> Any:
        if not self._username_is_client_id:
            return await super()._initialize_client_session(
                reader, writer, remote_address, remote_port
            )
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except Exception as exc:  # what amqtt itself does: give up on this connection
            await writer.close()
            raise AMQTTError(f"not an MQTT CONNECT from {remote_address}: {exc}") from exc
        if session.username:
            session.client_id = session.username
        if not await self._authenticate(session, None):  # type: ignore[arg-type]
            handler.attach(session, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            raise AMQTTError(f"not authorised: {session.username!r} from {remote_address}")
        # the rest of amqtt's session setup (clean session -> fresh, else resumed)
        if session.clean_session:
            await self._delete_session(session.client_id)
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for attr in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "keep_alive",
                "username",
                "password",
            ):
                setattr(existing, attr, getattr(session, attr))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session


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
    broker = FleetBroker(
        config, loop=asyncio.get_running_loop(), username_is_client_id=password_file is not None
    )
    await broker.start()
    ready.set()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()
