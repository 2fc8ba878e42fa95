"""``edgeserve keys``: create, rotate and show the signing keys and the keyring.

A keys directory holds::

    root.key        Ed25519 root key (PEM, 0600) - keep it OFFLINE after `init`/`rotate`
    release.key     signs releases (`edgeserve fleet release --key keys/release.key`)
    fleet.key       the fleet server signs desired-state documents with it
    keyring.json    the current keyring envelope, signed by root
    keyrings/N.json every keyring version, so a device on an old one can walk the chain
    root.json       the trust anchor a device pins at install (root public keys)
    retired/        keys rotated out (kept so old keyrings stay auditable)

Library functions (:func:`init_keys`, :func:`rotate_keys`, :func:`load_keyring_chain`) do the
work; the commands only parse arguments.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from edgeserve.errors import ConfigError, StorageError
from edgeserve.manifest import canonical_json
from edgeserve.trust import (
    Keyring,
    SigningKey,
    generate_key,
    make_keyring,
    sign_keyring,
    verify_keyring,
    write_atomic,
)

__all__ = ["init_keys", "keys", "load_keyring", "load_keyring_chain", "rotate_keys"]

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


def _describe(keyring: Keyring) -> dict[str, Any]:
    return {
        "version": keyring.version,
        "expires": keyring.expires,
        "root": {"threshold": keyring.root_threshold, "keyids": sorted(keyring.root_keys)},
        "release": {"threshold": keyring.threshold, "keyids": sorted(keyring.release_keys)},
        "fleet": {"threshold": keyring.fleet_threshold, "keyids": sorted(keyring.fleet_keys)},
    }


@click.group()
def keys() -> None:
    """Create and rotate signing keys (root, release, fleet) and the keyring."""


@keys.command("init")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--expires-days", default=365, show_default=True, type=click.IntRange(1, 3650))
@click.option("--force", is_flag=True, help="Replace existing keys.")
def init_cmd(out: Path, expires_days: int, force: bool) -> None:
    """Create root/release/fleet keys, a root-signed keyring and the device trust anchor."""
    keyring = init_keys(out, expires_days=expires_days, force=force)
    click.echo(f"wrote {out}/: root.key (keep offline), release.key, fleet.key, keyring.json")
    click.echo(f"device trust anchor: {out / 'root.json'} (pin it at install)")
    click.echo(f"keyring v{keyring.version} expires {keyring.expires}")


@keys.command("rotate")
@click.option(
    "--dir",
    "directory",
    default="keys",
    show_default=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(ROLES),
    help="Key(s) to replace; default: root and release.",
)
@click.option("--expires-days", default=365, show_default=True, type=click.IntRange(1, 3650))
def rotate_cmd(directory: Path, roles: tuple[str, ...], expires_days: int) -> None:
    """Write keyring N+1 signed by the old and the new root key."""
    keyring = rotate_keys(directory, roles=roles or ("root", "release"), expires_days=expires_days)
    click.echo(f"keyring v{keyring.version} written to {directory / 'keyring.json'}")


@keys.command("show")
@click.argument(
    "path", default="keys", required=False, type=click.Path(exists=True, path_type=Path)
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(path: Path, as_json: bool) -> None:
    """Show a keyring (a keys directory or a keyring.json)."""
    keyring = load_keyring(path / "keyring.json" if os.path.isdir(path) else path)
    info = _describe(keyring)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"keyring v{info['version']}  expires {info['expires']}")
    for role in ROLES:
        entry = info[role]
        ids = ", ".join(k[:16] for k in entry["keyids"]) or "-"
        click.echo(f"  {role:<8} threshold {entry['threshold']}  keys {ids}")
