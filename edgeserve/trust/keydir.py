"""A keys directory on disk: create, rotate and read the signing keys and the keyring.

A keys directory holds::

    root.key        Ed25519 root key (PEM, 0600) - keep it OFFLINE after `init`/`rotate`
    release.key     signs releases (`edgeserve fleet release --key keys/release.key`)
    fleet.key       the fleet server signs desired-state documents with it
    keyring.json    the current keyring envelope, signed by root
    keyrings/N.json every keyring version, so a device on an old one can walk the chain
    root.json       the trust anchor a device pins at install (root public keys)
    retired/        keys rotated out (kept so old keyrings stay auditable)

``edgeserve keys`` (:mod:`edgeserve.keys_cli`) and the fleet server call these functions.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edgeserve.bundle.manifest import canonical_json
from edgeserve.errors import ConfigError, StorageError
from edgeserve.trust.keyring import (
    Keyring,
    make_keyring,
    sign_keyring,
    verify_keyring,
    write_atomic,
)
from edgeserve.trust.keys import SigningKey, generate_key

__all__ = ["ROLES", "init_keys", "load_keyring", "load_keyring_chain", "rotate_keys"]

ROLES = ("root", "release", "fleet")


def _write_keyring(directory: Path, envelope: dict[str, Any], version: int) -> None:
    data = canonical_json(envelope) + b"\n"
    write_atomic(directory / "keyrings" / f"{version}.json", data)
    write_atomic(directory / "keyring.json", data)


def init_keys(out: Path, *, expires_days: int = 365, force: bool = False) -> Keyring:
    """Create root, release and fleet keys, keyring v1 signed by root, and ``root.json``.

    Raises:
        StorageError: keys already exist in ``out`` (without ``force``) or cannot be written.
    """
    if (out / "root.key").exists() and not force:
        raise StorageError(f"{out}: keys already exist (use --force to replace them)")
    keys = {role: generate_key() for role in ROLES}
    keyring = make_keyring(
        version=1,
        expires=datetime.now(timezone.utc) + timedelta(days=expires_days),
        root_keys=[keys["root"]],
        release_keys=[keys["release"]],
        fleet_keys=[keys["fleet"]],
    )
    for role, key in keys.items():
        key.save(out / f"{role}.key")
    _write_keyring(out, sign_keyring(keyring, [keys["root"]]), 1)
    keyring.anchor.save(out / "root.json")
    return keyring


def load_keyring(path: Path) -> Keyring:
    """Read a keyring envelope without verifying it against an anchor (operator side).

    Raises:
        ConfigError: missing or malformed.
    """
    try:
        obj = json.loads(path.read_bytes())
        return Keyring.from_dict(obj["signed"])
    except OSError as exc:
        raise ConfigError(f"cannot read keyring {path}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a keyring envelope ({exc})") from exc


def load_keyring_chain(directory: Path) -> list[dict[str, Any]]:
    """Every keyring envelope in ``directory/keyrings`` (oldest first), for devices to walk.

    Raises:
        ConfigError: unreadable.
    """
    files = sorted((directory / "keyrings").glob("*.json"), key=lambda p: int(p.stem))
    try:
        return [json.loads(p.read_bytes()) for p in files]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read keyring chain in {directory}: {exc}") from exc


def rotate_keys(
    directory: Path, *, roles: tuple[str, ...] = ("root", "release"), expires_days: int = 365
) -> Keyring:
    """Replace the keys of ``roles`` and write keyring N+1, signed by the old and new root.

    Old keys move to ``retired/``. The result is verified against the current keyring before
    anything is written, as a device would.

    Raises:
        ConfigError: unknown role or missing keys.
        StorageError: cannot write.
    """
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ConfigError(f"unknown role(s) {sorted(unknown)}; choose from {', '.join(ROLES)}")
    current = load_keyring(directory / "keyring.json")
    old = {role: SigningKey.load(directory / f"{role}.key") for role in ROLES}
    new = {role: (generate_key() if role in roles else old[role]) for role in ROLES}
    keyring = make_keyring(
        version=current.version + 1,
        expires=datetime.now(timezone.utc) + timedelta(days=expires_days),
        root_keys=[new["root"]],
        release_keys=[new["release"]],
        fleet_keys=[new["fleet"]],
    )
    envelope = sign_keyring(keyring, [old["root"], new["root"]])
    verify_keyring(
        canonical_json(envelope), current, now=datetime.now(timezone.utc)
    )  # refuse to write a keyring devices would reject
    for role in roles:
        retired = directory / "retired" / f"{role}-v{current.version}-{old[role].keyid[:12]}.key"
        old[role].save(retired)
        new[role].save(directory / f"{role}.key")
    _write_keyring(directory, envelope, keyring.version)
    keyring.anchor.save(directory / "root.json")
    return keyring
