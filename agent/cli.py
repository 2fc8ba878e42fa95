"""``edgeserve agent``: install, list, activate, label, remove, run, batch.

Commands parse arguments and call the library (click's thin-CLI shape); errors are raised as
:class:`~edgeserve.errors.EdgeServeError` and become one line at the root's error boundary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

__all__ = ["agent"]

_STATE_HELP = "Agent state directory (model store, telemetry buffer); env EDGESERVE_STATE."
_state_option = click.option(
    "--state",
    type=click.Path(path_type=Path),
    required=True,
    envvar="EDGESERVE_STATE",
    help=_STATE_HELP,
)


def _config(config: Path | None, state: Path | None, **overrides: Any) -> Any:
    from edgeserve.agent.run_args import agent_config

    return agent_config(config, state, overrides)


@click.group()
def agent() -> None:
    """Run the on-device agent: install, serve, batch."""


@agent.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@_state_option
@click.option("--no-activate", is_flag=True, help="Install without making it the active version.")
def install(bundle: Path, state: Path, no_activate: bool) -> None:
    """Check BUNDLE (directory or .tar) and add it to the local model store."""
    from edgeserve.agent.store import ModelStore

    store = ModelStore(state)
    store.recover()
    item = store.install(bundle, activate=not no_activate)
    active = store.active_version(item.name)
    if item.copied:
        click.echo(f"installed {item.name} version {item.version} (active: {active})")
    else:
        click.echo(
            f"{item.name} version {item.version} is already installed; the given bundle was "
            f"checked and is identical, nothing copied (active: {active})"
        )


@agent.command()
@_state_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(state: Path, as_json: bool) -> None:
    """List installed models, their versions, the active one and labels."""
    from edgeserve.agent.store import ModelStore

    store = ModelStore(state)
    rows = []
    for name in store.models():
        rows.append(
            {
                "name": name,
                "versions": store.versions(name),
                "active": store.active_version(name),
                "previous": store.previous_active(name),
                "labels": store.labels(name),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no models installed")
        return
    for row in rows:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(row["labels"].items())) or "-"
        versions = ", ".join(f"{v}*" if v == row["active"] else str(v) for v in row["versions"])
        click.echo(f"{row['name']}: versions {versions}  labels {labels}")


@agent.command()
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@_state_option
def activate(name: str, version: int, state: Path) -> None:
    """Make VERSION of NAME the active version (a running agent hot-swaps to it)."""
    from edgeserve.agent.store import ModelStore

    ModelStore(state).activate(name, version)
    click.echo(f"{name}: version {version} active")


@agent.command()
@click.argument("name")
@click.argument("label")
@click.argument("version", type=click.IntRange(min=1), required=False)
@_state_option
def label(name: str, label: str, version: int | None, state: Path) -> None:
    """Point LABEL (stable, canary, ...) of NAME at VERSION; without VERSION, remove it."""
    from edgeserve.agent.store import ModelStore

    ModelStore(state).set_label(name, label, version)
    click.echo(f"{name}: {label} -> {version if version is not None else '(removed)'}")


@agent.command()
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@_state_option
def remove(name: str, version: int, state: Path) -> None:
    """Delete an installed, inactive VERSION of NAME."""
    from edgeserve.agent.store import ModelStore

    ModelStore(state).remove(name, version)
    click.echo(f"{name}: version {version} removed")


@agent.command()
@click.option(
    "--state", type=click.Path(path_type=Path), envvar="EDGESERVE_STATE", help=_STATE_HELP
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, path_type=Path),
    help="agent.toml; flags override it.",
)
@click.option("--host", help="Bind address (default 127.0.0.1; others need --token).")
@click.option("--port", type=click.IntRange(0, 65535), help="TCP port (default 8000; 0 = any).")
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    help=(
        "Also serve the gRPC API (OIP v2) on this port "
        "(default off; needs edgeserve-toolkit[grpc])."
    ),
)
@click.option("--token", envvar="EDGESERVE_AGENT_TOKEN", help="Bearer token clients must send.")
@click.option("--batching/--no-batching", default=None, help="Dynamic batching on or off.")
@click.option("--max-batch-size", type=click.IntRange(min=1), help="Rows per execution.")
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(min=0),
    help="Microseconds to wait for a fuller batch.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Serving processes sharing the port (default 1); one runs fleet sync.",
)
@click.option("--workers", type=click.IntRange(min=1), help="Worker threads for model runs.")
@click.option("--threads", type=click.IntRange(min=0), help="Runtime threads per model.")
@click.option(
    "--provider",
    "providers",
    multiple=True,
    help="ONNX Runtime execution provider to try, in order (repeatable).",
)
def run(
    state: Path | None,
    config_path: Path | None,
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    token: str | None,
    batching: bool | None,
    max_batch_size: int | None,
    max_queue_delay_us: int | None,
    processes: int | None,
    workers: int | None,
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Serve the store's models over HTTP (OIP v2, TF Serving, /metrics) and optionally gRPC."""
    # `edgeserve agent run` usually arrives here only when edgeserve.cli.main handed it to
    # click (edgeserve.agent.run_args); both paths run the same function
    from edgeserve.agent.run_args import RunArgs, run_command

    if state is None and config_path is None:
        raise click.UsageError("give --state DIR or --config agent.toml")
    run_command(
        RunArgs(
            state=state,
            config_path=config_path,
            host=host,
            port=port,
            grpc_port=grpc_port,
            token=token,
            batching=batching,
            max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us,
            processes=processes,
            workers=workers,
            threads=threads,
            providers=providers,
        )
    )


@agent.command()
@_state_option
@click.option("--model", "model_name", required=True, help="Installed model name.")
@click.option("--version", "version", type=click.IntRange(min=1), help="Default: active.")
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help=".npy, .npz or .jsonl input.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Output in the same format as the input.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, path_type=Path),
    help="agent.toml for runtime and batching settings.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Rows per checkpointed chunk (the unit of resume).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def batch(
    state: Path,
    model_name: str,
    version: int | None,
    input_path: Path,
    output_path: Path,
    config_path: Path | None,
    chunk_rows: int,
    no_progress: bool,
) -> None:
    """Run a model over a file of inputs; resumes after a kill without redoing work."""
    from edgeserve.agent.offline import run_batch

    config = _config(config_path, state)
    done = run_batch(
        config,
        model_name,
        version,
        input_path,
        output_path,
        chunk_rows=chunk_rows,
        progress=not no_progress,
    )
    click.echo(f"wrote {done.rows} rows to {output_path} ({done.resumed_rows} resumed)")
