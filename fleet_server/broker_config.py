"""Mosquitto password file, ACL and configuration for a fleet, and per-device credentials.

Password hashes use Mosquitto 2's ``$7$`` format, as ``mosquitto_passwd`` writes it:
``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>`` with 101 iterations, a 12 byte salt
and a 64 byte key (mosquitto ``src/password_mosq.c``). The store keeps only this hash, never a
device's password, so the password file can be regenerated at any time.

The ACL follows mosquitto.conf(5) "acl_file": ``pattern`` lines apply to every client with
``%u`` replaced by its username, so one line per topic kind confines every device to its own
topics; the server's user gets ``readwrite`` on the fleet's subtree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeserve.errors import ConfigError, StorageError
from edgeserve.fsutil import write_atomic

__all__ = [
    "BrokerFiles",
    "acl_text",
    "check_password",
    "hash_password",
    "mosquitto_conf_text",
    "mosquitto_listener",
    "new_password",
    "password_file_text",
    "write_broker_files",
    "write_mosquitto_files",
]

_ITERATIONS = 101  # mosquitto_passwd's default for $7$
_SALT_BYTES = 12


def new_password() -> str:
    """A fresh random device password (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash ``password`` as ``mosquitto_passwd`` does (``$7$``, PBKDF2-HMAC-SHA512).

    Args:
        password: the clear-text password.
        salt: a fixed salt for tests; random otherwise.

    Returns:
        The ``$7$...`` string to put after ``username:`` in a Mosquitto password file.
    """
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS, 64)
    return f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (constant-time comparison)."""
    try:
        _, kind, rounds, salt_b64, key_b64 = hashed.split("$")
        if kind != "7":
            return False
        key = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt_b64), int(rounds), 64
        )
    except ValueError:
        return False
    return hmac.compare_digest(key, base64.b64decode(key_b64))


def password_file_text(entries: Iterable[tuple[str, str]]) -> str:
    """A Mosquitto password file from ``(username, $7$ hash)`` pairs."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in sorted(entries))


def acl_text(prefix: str, fleet: str, server_user: str) -> str:
    """The ACL: the server reads and writes the fleet's subtree; each device (username = device
    id) reads only its own ``desired`` and writes only its own ``reported``, ``telemetry`` and
    ``presence``. Nothing else is allowed (Mosquitto denies by default once an ACL is set)."""
    root = f"{prefix}/{fleet}"
    return (
        "# edgeserve fleet ACL (mosquitto.conf(5), acl_file). Generated; do not edit.\n"
        f"user {server_user}\n"
        f"topic readwrite {root}/#\n"
        "\n"
        "# every device: %u is its username, which is its device id\n"
        f"pattern read {root}/dev/%u/desired\n"
        f"pattern write {root}/dev/%u/reported\n"
        f"pattern write {root}/dev/%u/telemetry\n"
        # presence: the device writes it (and its Last Will); reading it back lets a device's
        # MQTT client confirm its own retained status.
        f"pattern readwrite {root}/dev/%u/presence\n"
    )


# Mosquitto (packaged) starts as root, reads its configuration, then drops to the user
# `mosquitto` *before* it opens the password file, the ACL and the persistence database
# (mosquitto.conf(5), "user"). Our files are therefore group-readable by that user's group.
BROKER_USER = "mosquitto"


@dataclass(frozen=True)
class BrokerFiles:
    """Paths of the generated files.

    Attributes:
        password_file: ``passwords``.
        acl_file: ``acl``.
        config: ``mosquitto.conf``, to run Mosquitto with (``mosquitto -c``); it sets its own
            persistence directory and pid file.
        drop_in: ``edgeserve.conf``, the same listener and security settings for
            ``/etc/mosquitto/conf.d/`` (Debian's main file already sets those two).
        group: the group the files were given (None when the broker user does not exist).
        warnings: reasons the broker user may still not reach the files (one line each).
    """

    password_file: Path
    acl_file: Path
    config: Path
    drop_in: Path
    group: str | None = None
    warnings: tuple[str, ...] = ()


def mosquitto_listener(url: str) -> str:
    """``listener PORT HOST`` for ``[broker] url`` (mosquitto.conf(5), "listener")."""
    from edgeserve.mqtt import parse_broker_url, uses_tls

    host, port = parse_broker_url(url)
    if uses_tls(url):
        raise ConfigError(
            f"[broker] url {url!r}: the generated mosquitto.conf has no TLS listener; add "
            "certfile/keyfile to it yourself, or use mqtt:// behind a TLS proxy"
        )
    return f"listener {port} {host}"


def mosquitto_conf_text(
    out: Path, url: str, *, standalone: bool, password_file: Path, acl_file: Path
) -> str:
    """The Mosquitto configuration for a fleet (mosquitto.conf(5)).

    ``use_username_as_clientid true`` makes every client's id its username, so the holder of
    device A's credentials can never take over (and disconnect, MQTT 3.1.1 section 3.1.4 step 2)
    the session of device B by connecting with B's client id.
    """
    lines = [
        "# edgeserve fleet broker settings (mosquitto.conf(5)). Generated by",
        "# `edgeserve fleet broker-config`; do not edit, run it again instead.",
        mosquitto_listener(url),
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        "# a username can only ever hold its own client id",
        "use_username_as_clientid true",
        "# retained desired state survives a broker restart",
        "persistence true",
    ]
    if standalone:
        data = out / "data"
        lines += [
            f"persistence_location {data}/",
            f"pid_file {data / 'mosquitto.pid'}",
            f"log_dest file {data / 'mosquitto.log'}",
        ]
    return "\n".join(lines) + "\n"


def _broker_group() -> tuple[str, int] | None:
    try:
        import grp
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    try:
        return BROKER_USER, grp.getgrnam(BROKER_USER).gr_gid
    except KeyError:
        return None


def _reachable_warnings(out: Path, gid: int | None) -> list[str]:
    """Parents of ``out`` the broker user cannot traverse (e.g. ``/root`` is 0700)."""
    warnings = []
    for parent in [*reversed(out.resolve().parents), out.resolve()]:
        try:
            st = parent.stat()
        except OSError:
            continue
        ok = st.st_mode & 0o001 or (gid is not None and st.st_gid == gid and st.st_mode & 0o010)
        if not ok:
            warnings.append(
                f"{parent} (mode {st.st_mode & 0o777:04o}) is not searchable by user "
                f"{BROKER_USER}: Mosquitto will not open the files below it; keep them in a "
                "directory it can reach, e.g. /etc/mosquitto/edgeserve"
            )
    return warnings


def write_mosquitto_files(out: Path, passwords: str, acl: str, url: str) -> BrokerFiles:
    """Write ``passwords``, ``acl``, ``mosquitto.conf`` and ``edgeserve.conf`` into ``out``.

    Files are written atomically, mode 0640 and group ``mosquitto`` when that group exists
    (so the packaged broker reads them after dropping privileges), else 0600. ``out/data``
    (persistence for ``mosquitto.conf``) is made writable by the same group.

    Args:
        out: output directory (created).
        passwords: the password file text.
        acl: the ACL text.
        url: ``[broker] url``; its host and port become the listener.

    Returns:
        The written paths, the group used and reachability warnings.

    Raises:
        ConfigError: a TLS URL (no listener can be generated for it).
        StorageError: the files cannot be written.
    """
    out = out.resolve()
    listener = mosquitto_listener(url)  # fail before writing anything
    del listener
    group = _broker_group()
    gid = group[1] if group else None
    mode = 0o640 if group else 0o600
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "data").mkdir(exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {out}: {exc.strerror or exc}") from exc
    pw, acl_path = out / "passwords", out / "acl"
    texts = {
        "passwords": passwords,
        "acl": acl,
        "mosquitto.conf": mosquitto_conf_text(
            out, url, standalone=True, password_file=pw, acl_file=acl_path
        ),
        "edgeserve.conf": mosquitto_conf_text(
            out, url, standalone=False, password_file=pw, acl_file=acl_path
        ),
    }
    for name, text in texts.items():
        write_atomic(out / name, text.encode(), mode)
    warnings = []
    if gid is not None:
        try:
            for name in texts:
                os.chown(out / name, -1, gid)
            os.chown(out / "data", -1, gid)
            os.chmod(out / "data", 0o770)
            os.chown(out, -1, gid)
            os.chmod(out, 0o750)
        except PermissionError:
            warnings.append(
                f"cannot give {out} to group {BROKER_USER} (run as root or as a member); "
                "Mosquitto running as that user will not read the files"
            )
        warnings += _reachable_warnings(out, gid)
    return BrokerFiles(
        pw,
        acl_path,
        out / "mosquitto.conf",
        out / "edgeserve.conf",
        group[0] if group and not warnings else None,
        tuple(warnings),
    )


def write_broker_files(
    out: Path,
    devices: Iterable[tuple[str, str]],
    *,
    prefix: str,
    fleet: str,
    server_user: str,
    server_password: str,
    url: str = "mqtt://127.0.0.1:1883",
) -> BrokerFiles:
    """Write the broker files for ``devices`` plus the server's own account.

    Args:
        out: output directory (created).
        devices: ``(device id, $7$ hash)`` pairs from the store.
        prefix: topic prefix.
        fleet: fleet name.
        server_user: the fleet server's broker username.
        server_password: its password (hashed here; never empty).
        url: ``[broker] url`` for the listener line.

    Returns:
        The written paths.

    Raises:
        ConfigError: an empty server password.
        StorageError: the files cannot be written.
    """
    if not server_password:
        raise ConfigError("[broker] password is empty: the server could never log in")
    entries = [*devices, (server_user, hash_password(server_password))]
    return write_mosquitto_files(
        out, password_file_text(entries), acl_text(prefix, fleet, server_user), url
    )
