"""``edgeserve keys``: create, rotate and show the signing keys and the keyring.

The commands only parse arguments and print; the keys directory itself (its layout, init,
rotation, reading the keyring chain) is :mod:`edgeserve.trust.keydir`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from edgeserve.trust import Keyring
from edgeserve.trust.keydir import ROLES, init_keys, load_keyring, rotate_keys

__all__ = ["keys"]


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
