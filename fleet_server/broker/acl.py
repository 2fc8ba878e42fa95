"""Mosquitto ACL files (mosquitto.conf(5), "acl_file"): writing the fleet's, and reading and
applying one (for the amqtt broker, which has no ACL files of its own).

``pattern`` lines apply to every client with ``%u`` replaced by its username, so one line per
topic kind confines every device to its own topics; the server's user gets ``readwrite`` on
the fleet's subtree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeserve.errors import ConfigError

__all__ = ["AclRule", "acl_allows", "acl_text", "parse_acl"]


def acl_text(prefix: str, fleet: str, server_user: str | Sequence[str]) -> str:
    """The ACL: the server (each replica's user, when several share one database) reads and
    writes the fleet's subtree; each device (username = device id) reads only its own
    ``desired`` and writes only its own ``reported``, ``telemetry`` and ``presence``. Nothing
    else is allowed (Mosquitto denies by default once an ACL is set)."""
    root = f"{prefix}/{fleet}"
    users = [server_user] if isinstance(server_user, str) else list(server_user)
    servers = "".join(f"user {u}\ntopic readwrite {root}/#\n" for u in dict.fromkeys(users))
    return (
        "# edgeserve fleet ACL (mosquitto.conf(5), acl_file). Generated; do not edit.\n"
        f"{servers}"
        "\n"
        "# every device: %u is its username, which is its device id\n"
        f"pattern read {root}/dev/%u/desired\n"
        f"pattern write {root}/dev/%u/reported\n"
        f"pattern write {root}/dev/%u/telemetry\n"
        # presence: the device writes it (and its Last Will); reading it back lets a device's
        # MQTT client confirm its own retained status.
        f"pattern readwrite {root}/dev/%u/presence\n"
    )


@dataclass(frozen=True)
class AclRule:
    """One ``topic``/``pattern`` line: which access, to what, for whom (None = everyone)."""

    access: str  # "read" | "write" | "readwrite"
    topic: str
    user: str | None
    is_pattern: bool


def parse_acl(text: str) -> list[AclRule]:
    """Parse a Mosquitto ACL file.

    Raises:
        ConfigError: a line that is not ``user``, ``topic`` or ``pattern``.
    """
    rules: list[AclRule] = []
    user: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "user":
            user = rest
            continue
        if word not in ("topic", "pattern") or not rest:
            raise ConfigError(f"ACL line {number}: expected user/topic/pattern, got {line!r}")
        access, _, topic = rest.partition(" ")
        if access not in ("read", "write", "readwrite", "deny"):
            access, topic = "readwrite", rest
        # `pattern` lines apply to every client; `topic` lines to the current `user` block
        # (before any `user` line: to anonymous clients) - mosquitto.conf(5).
        rules.append(
            AclRule(access, topic.strip(), None if word == "pattern" else user, word == "pattern")
        )
    return rules


def _levels_match(topic: str, pattern: str, *, filter_subset: bool) -> bool:
    """MQTT topic matching (MQTT 3.1.1 section 4.7). With ``filter_subset``, ``topic`` is itself a
    subscription filter and must be covered by ``pattern`` (a ``+`` in it only by ``+``/``#``)."""
    t_levels, p_levels = topic.split("/"), pattern.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(t_levels):
            return False
        t = t_levels[i]
        if filter_subset and t == "#":
            return False
        if p == "+":
            continue
        if t != p or (filter_subset and t == "+"):
            return False
    return len(t_levels) == len(p_levels)


def acl_allows(
    rules: list[AclRule],
    *,
    user: str | None,
    client_id: str,
    topic: str,
    write: bool,
    subscribe: bool = False,
) -> bool:
    """Whether the ACL grants ``user`` write (publish) or read (subscribe/receive) on ``topic``.

    ``%u`` and ``%c`` in patterns become the username and client id; a pattern with ``%u`` never
    matches an anonymous client (mosquitto behaviour). ``deny`` lines win over grants.
    """
    wanted = "write" if write else "read"
    granted = False
    for rule in rules:
        if rule.user is not None and rule.user != user:
            continue
        if not rule.is_pattern and rule.user is None and user is not None:
            continue  # topic lines before any `user` line apply to anonymous clients only
        pattern = rule.topic
        if rule.is_pattern:
            if "%u" in pattern and user is None:
                continue
            pattern = pattern.replace("%u", user or "").replace("%c", client_id)
        if not _levels_match(topic, pattern, filter_subset=subscribe):
            continue
        if rule.access == "deny":
            return False
        if rule.access in (wanted, "readwrite"):
            granted = True
    return granted
