"""``edgeserve fleet`` operations: ``init``, ``broker-config``, ``release`` (upload, sign,
list), ``audit`` and ``stats``. Registered on the ``fleet`` group by the package."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from .common import Ctx, echo_json

__all__ = ["audit", "broker_config", "init", "release", "stats"]


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", default=8700, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP bind address.")
@click.option(
    "--broker-url", default="mqtt://127.0.0.1:1883", show_default=True, help="[broker] url."
)
def init(directory: Path, port: int, host: str, broker_url: str) -> None:
    """Create a fleet in DIRECTORY: keys, fleet.toml (token, broker password), broker files."""
    from ..bootstrap import init_fleet

    made = init_fleet(directory, host=host, port=port, broker_url=broker_url)
    d = made.root
    click.echo(f"fleet in {d}:")
    click.echo(f"  {made.config}  operator token and broker password (mode 0600)")
    click.echo(f"  {made.keys}/root.key  ROOT KEY: move it offline; only `keys rotate` needs it")
    click.echo(f"  {made.keys}/release.key  signs releases (your release machine or CI)")
    click.echo(f"  {made.keys}/root.json  the trust anchor every device pins")
    click.echo(
        f"  {made.broker.config}  Mosquitto config (also {made.broker.drop_in.name} for "
        "/etc/mosquitto/conf.d/)"
    )
    for warning in made.broker.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo("next:")
    click.echo(f"  export EDGESERVE_FLEET_CONFIG={made.config}")
    click.echo("  edgeserve fleet serve &")
    click.echo("  edgeserve fleet device add DEVICE --agent-config DEVICE.toml")
    click.echo(f"  edgeserve fleet broker-config --out {made.broker.config.parent}")
    click.echo(f"  mosquitto -c {made.broker.config} -d")


# -- releases --------------------------------------------------------------------------------


class _ReleaseGroup(click.Group):
    """``fleet release BUNDLE --key K`` uploads (the default); ``list`` and ``sign`` are
    subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["upload", *args]
        return super().parse_args(ctx, args)


_key_option = click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Release key (keys/release.key).",
)


@click.group(cls=_ReleaseGroup)
def release() -> None:
    """Releases: `fleet release BUNDLE --key K` signs and uploads; list; sign only."""


@release.command("upload")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_key_option
@click.pass_obj
def release_upload(obj: Ctx, bundle: Path, key_path: str) -> None:
    """Sign BUNDLE with the release key and upload it as a new, immutable release."""
    from edgeserve.trust import SigningKey

    from ..releases import prepare_release

    key = SigningKey.load(key_path)
    with tempfile.TemporaryDirectory(prefix="edgeserve-release-") as tmp:
        tar = prepare_release(bundle, key, Path(tmp))
        with obj.client() as client:
            result = client.upload_release(tar)
    click.echo(
        f"released {result['model']} v{result['version']} "
        f"({result['size']} bytes, sha256 {result['sha256'][:12]}...)"
    )


@release.command("sign")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_key_option
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also pack the signed bundle as this .tar (what the server accepts).",
)
def release_sign(bundle: Path, key_path: str, out: Path | None) -> None:
    """Sign BUNDLE (writes its signature.json) without uploading: for CI that uploads later."""
    from edgeserve.bundle import pack_bundle
    from edgeserve.trust import SigningKey, sign_release

    key = SigningKey.load(key_path)
    sign_release(bundle, [key])
    click.echo(f"signed {bundle} with release key {key.keyid[:12]} ({bundle / 'signature.json'})")
    if out is not None:
        pack_bundle(bundle, out)
        click.echo(f"packed {out}")


@release.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def release_list(obj: Ctx, as_json: bool) -> None:
    """Every release: model, version, size, sha256, when."""
    with obj.client() as client:
        releases = client.releases()
    if as_json:
        echo_json(releases)
        return
    from datetime import datetime, timezone

    from rich.console import Console
    from rich.table import Table

    table = Table("model", "version", "size", "sha256", "created (UTC)")
    for r in releases:
        when = datetime.fromtimestamp(r["created"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(r["model"], str(r["version"]), str(r["size"]), r["sha256"][:16], when)
    Console().print(table)


# -- stats -----------------------------------------------------------------------------------


@click.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats(obj: Ctx, as_json: bool) -> None:
    """MQTT messages received and dropped (by reason), desired states published, devices."""
    with obj.client() as client:
        st = client.stats()
    if as_json:
        echo_json(st)
        return
    ingest = st["ingest"]
    received = ", ".join(f"{k} {v}" for k, v in sorted(ingest["received"].items())) or "none"
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(ingest["dropped"].items())) or "none"
    click.echo(f"devices: {st['devices']}; broker connected: {st['mqtt_connected']}")
    click.echo(f"received: {received}")
    click.echo(f"dropped: {dropped}")
    click.echo(f"desired states published: {st['published']}")


# -- audit -----------------------------------------------------------------------------------


@click.command("audit")
@click.option("--rollout", "rollout_id", type=int, default=None, help="Only this rollout.")
@click.option("--subject", default=None, help="Only this subject (device:X, release:M:V, ...).")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def audit(obj: Ctx, rollout_id: int | None, subject: str | None, limit: int, as_json: bool) -> None:
    """The audit log, newest first: every decision, operator action and device failure."""
    if rollout_id is not None:
        subject = f"rollout:{rollout_id}"
    with obj.client() as client:
        entries = client.audit(subject, limit)
    if as_json:
        echo_json(entries)
        return
    from datetime import datetime, timezone

    for e in entries:
        when = datetime.fromtimestamp(e["ts"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        d = e.get("detail") or {}
        extra = []
        if "phase" in d:
            extra.append(f"phase {d['phase']}%")
        if "device" in d:
            extra.append(f"device {d['device']}")
        if d.get("reason_code"):
            extra.append(f"reason_code {d['reason_code']}")
        if d.get("error"):
            extra.append(f"error: {d['error']}")
        tail = f" [{'; '.join(extra)}]" if extra else ""
        click.echo(f"{when} {e['subject']} {e['action']} ({e['actor']}): {e['reason']}{tail}")


# -- broker ----------------------------------------------------------------------------------


@click.command("broker-config")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def broker_config(obj: Ctx, out: Path) -> None:
    """Write Mosquitto's password file, ACL and config for every registered device into OUT."""
    from ..broker.files import write_mosquitto_files

    with obj.client() as client:
        files = client.broker_config()
    written = write_mosquitto_files(out, files["passwords"], files["acl"], files["url"])
    owner = f"mode 0640, group {written.group}" if written.group else "mode 0600"
    click.echo(
        f"wrote {written.password_file}, {written.acl_file}, {written.config} and "
        f"{written.drop_in} ({owner})"
    )
    for warning in written.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"run it: mosquitto -c {written.config} -d   (as root it drops to user mosquitto); "
        f"or for the packaged service: ln -s {written.drop_in} "
        "/etc/mosquitto/conf.d/ && systemctl reload mosquitto (after adding devices: reload)"
    )
