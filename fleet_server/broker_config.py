"""Mosquitto password file and ACL for a fleet, and per-device credentials.

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

from edgeserve.fsutil import write_atomic

__all__ = [
    "BrokerFiles",
    "acl_text",
    "check_password",
    "hash_password",
    "new_password",
    "password_file_text",
    "write_broker_files",
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


@dataclass(frozen=True)
class BrokerFiles:
    """Paths of the generated files."""

    password_file: Path
    acl_file: Path


def write_broker_files(
    out: Path,
    devices: Iterable[tuple[str, str]],
    *,
    prefix: str,
    fleet: str,
    server_user: str,
    server_password: str,
) -> BrokerFiles:
    """Write ``passwords`` and ``acl`` into ``out`` (mode 0600, atomically).

    Args:
        out: output directory (created).
        devices: ``(device id, $7$ hash)`` pairs from the store.
        prefix: topic prefix.
        fleet: fleet name.
        server_user: the fleet server's broker username.
        server_password: its password (hashed here).

    Returns:
        The written paths.

    Raises:
        StorageError: the files cannot be written.
    """
    entries = [*devices, (server_user, hash_password(server_password))]
    files = {
        "passwords": password_file_text(entries),
        "acl": acl_text(prefix, fleet, server_user),
    }
    for name, text in files.items():
        write_atomic(out / name, text.encode(), 0o600)
    return BrokerFiles(out / "passwords", out / "acl")
