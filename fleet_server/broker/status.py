"""What the fleet server knows about its broker connection, and the log lines an operator reads.

The server serves HTTP whether or not the broker is up, and keeps reconnecting (paho's backoff,
1 s doubling to 30 s). An operator sees one line when the broker first answers, one line per
outage naming its cause, and one line on recovery; ``/healthz`` and ``/metrics`` report the
same state:

- ``connecting``: not connected yet, no failure seen;
- ``connected``;
- ``refused``: nothing listens on the broker's port (or the broker refused the CONNECT);
- ``not authorised``: the broker refused the server's username/password (CONNACK 4 or 5);
- ``unreachable``: the host cannot be reached (DNS, routing, timeout, handshake);
- ``lost``: the connection dropped; reconnecting.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["STATES", "BrokerStatus"]

log = logging.getLogger(__name__)

STATES = ("connecting", "connected", "refused", "not authorised", "unreachable", "lost")


class BrokerStatus:
    """Thread-safe broker connection state (updated from paho's network thread).

    Args:
        url: the broker URL (in every line).
        username: the server's broker user (named in ``not authorised`` lines).
    """

    def __init__(self, url: str, username: str) -> None:
        self.url = url
        self.username = username
        self._lock = threading.Lock()
        self.state = "connecting"
        self.detail = ""
        self.since = time.time()
        self.outages = 0
        self._down_since: float | None = None

    def _set(self, state: str, detail: str) -> None:
        self.state, self.detail, self.since = state, detail, time.time()

    def connected(self) -> None:
        """CONNACK accepted."""
        with self._lock:
            previous, cause, down = self.state, self.detail, self._down_since
            self._set("connected", "")
            self._down_since = None
        who = f" as {self.username}" if self.username else " (anonymous)"
        if previous == "connecting":
            log.info("broker %s: connected%s", self.url, who)
        elif previous != "connected":
            lasted = time.time() - (down or time.time())
            log.warning(
                "broker %s: connected again%s after %.0f s (%s: %s)",
                self.url,
                who,
                lasted,
                previous,
                cause,
            )

    def failed(self, cause: str, detail: str) -> None:
        """A connection attempt failed with ``cause`` (see the module docstring)."""
        if cause == "not authorised" and self.username:
            detail = f"user {self.username}: {detail}"
        with self._lock:
            previous, lost_why = self.state, self.detail
            if self._down_since is None:
                self._down_since = time.time()
                self.outages += 1
            self._set(cause, detail)
        if previous == "lost":
            log.warning(
                "broker %s: connection lost (%s), reconnecting: %s (%s); retrying",
                self.url,
                lost_why,
                cause,
                detail,
            )
        elif previous != cause:
            log.warning("broker %s: %s (%s); retrying", self.url, cause, detail)

    def lost(self, reason: str) -> None:
        """An established connection dropped. Said together with the cause of the first failed
        reconnect, or with the recovery: one line per outage, one on recovery."""
        with self._lock:
            if self.state != "connected":
                return
            self._down_since = time.time()
            self.outages += 1
            self._set("lost", reason)

    def to_dict(self) -> dict[str, Any]:
        """``{"url", "state", "detail", "since", "outages"}`` for ``/healthz``."""
        with self._lock:
            return {
                "url": self.url,
                "state": self.state,
                "detail": self.detail,
                "since": self.since,
                "outages": self.outages,
            }
