"""Mosquitto password files: ``user:<hash>`` lines, as ``mosquitto_passwd`` writes them.

Hashes use Mosquitto 2's ``$7$`` format: ``$7$<iterations>$<base64 salt>$<base64
PBKDF2-HMAC-SHA512>`` with 101 iterations, a 12 byte salt and a 64 byte key (mosquitto
``src/password_mosq.c``); the older ``$6$`` salted SHA-512 is still accepted when checking.
The store keeps only the hash, never a device's password, so the password file can be
regenerated at any time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from edgeserve.errors import ConfigError

__all__ = [
    "hash_password",
    "new_password",
    "password_file_text",
    "read_password_file",
    "verify_password",
    "write_password_file",
]

_PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$ (mosquitto 2.0, password_mosq.c)
_SALT_BYTES = 12


def new_password() -> str:
    """A fresh random device password (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A Mosquitto ``$7$`` (PBKDF2-HMAC-SHA512, 101 iterations) password hash.

    Args:
        password: the plain password.
        salt: 12 random bytes unless given (tests).

    Returns:
        ``$7$101$<base64 salt>$<base64 hash>``, as mosquitto_passwd writes it.
    """
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS, 64)
    salt_b64, digest_b64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"$7${_PBKDF2_ITERATIONS}${salt_b64}${digest_b64}"


def verify_password(password: str, encoded: str) -> bool:
    """Check a password against a ``$7$`` or ``$6$`` Mosquitto hash (constant-time compare).

    Args:
        password: what the client sent.
        encoded: the hash from the password file.

    Returns:
        True when it matches; False for a mismatch or a format this function does not know.
    """
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, expected = int(parts[2]), _b64(parts[3]), _b64(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
            return hmac.compare_digest(got, expected)
        if len(parts) == 4 and parts[1] == "6":
            salt, expected = _b64(parts[2]), _b64(parts[3])
            return hmac.compare_digest(hashlib.sha512(password.encode() + salt).digest(), expected)
    except ValueError:
        return False
    return False


def _b64(text: str) -> bytes:
    """Strict base64 decode (raises ValueError on garbage)."""
    try:
        return base64.b64decode(text, validate=True)
    except Exception as exc:  # binascii.Error is a ValueError subclass; be explicit anyway
        raise ValueError(str(exc)) from exc


def read_password_file(path: Path) -> dict[str, str]:
    """``{user: hash}`` from a Mosquitto password file (``#`` comments and blank lines skipped)."""
    users: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not user:
            raise ConfigError(f"{path}:{number}: expected 'user:hash'")
        users[user] = encoded
    return users


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """Write ``users`` (plain passwords) as a Mosquitto password file, mode 0600."""
    text = "".join(f"{user}:{hash_password(pw)}\n" for user, pw in sorted(users.items()))
    path.write_text(text)
    path.chmod(0o600)
    return path


def password_file_text(entries: Iterable[tuple[str, str]]) -> str:
    """A Mosquitto password file from ``(username, $7$ hash)`` pairs."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in sorted(entries))
