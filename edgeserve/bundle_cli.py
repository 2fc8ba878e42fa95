"""``edgeserve bundle``: inspect and check bundles."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from edgeserve.bundle import Bundle, open_bundle

__all__ = ["bundle"]


@click.group()
def bundle() -> None:
    """Inspect and check edge bundles (directories or .tar files)."""


@bundle.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(path: Path, as_json: bool) -> None:
    """Show a bundle's manifest: model, tensors, files and validation figures."""
    with open_bundle(path, check=False) as b:
        if as_json:
            click.echo(json.dumps(b.manifest.to_dict(), indent=2, sort_keys=True))
            return
        render_manifest(b, Console())


@bundle.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def check(path: Path) -> None:
    """Check a bundle's integrity: schema, every file's size and sha256, no extra files.

    Exits non-zero on any mismatch.
    """
    with open_bundle(path) as b:
        m = b.manifest
        click.echo(
            f"ok: {m.name} v{m.version} ({len(m.files)} files, "
            f"{sum(f.size for f in m.files)} bytes)"
        )


def render_manifest(b: Bundle, console: Console) -> None:
    """Print a bundle's manifest as rich tables."""
    m = b.manifest
    head = Table(show_header=False, box=None)
    for key, value in (
        ("name", m.name),
        ("version", str(m.version)),
        ("format", m.format),
        ("precision", m.precision),
        ("target", m.target),
        ("providers", ", ".join(m.providers) or "-"),
        ("created", m.created),
        ("converter", str(m.converter.get("version", "-"))),
    ):
        head.add_row(f"[bold]{key}[/]", value)
    console.print(head)
    tensors = Table(title="tensors")
    for col in ("io", "name", "datatype", "shape"):
        tensors.add_column(col)
    for io, specs in (("input", m.inputs), ("output", m.outputs)):
        for t in specs:
            tensors.add_row(io, t.name, t.datatype, str(list(t.shape)))
    console.print(tensors)
    files = Table(title="files")
    for col in ("path", "role", "bytes", "sha256"):
        files.add_column(col)
    for f in m.files:
        files.add_row(f.path, f.role, f"{f.size:,}", f.sha256[:16] + "…")
    console.print(files)
    if m.validation:
        val = Table(title="validation")
        val.add_column("metric")
        val.add_column("value")
        for key, value in sorted(m.validation.items()):
            val.add_row(key, json.dumps(value) if not isinstance(value, str) else value)
        console.print(val)
