"""``edgeserve fleet experiment``: start an A/B experiment, report on it, promote the winner."""

from __future__ import annotations

from typing import Any

import click

from edgeserve.errors import ConfigError

from ..api import selector
from .common import Ctx, echo_json

__all__ = ["experiment"]


@click.group()
def experiment() -> None:
    """A/B experiments between two versions."""


@experiment.command("start")
@click.option("--model", required=True)
@click.option("--a", "a", required=True, type=int, help="Control version.")
@click.option("--b", "b", required=True, type=int, help="Candidate version.")
@click.option("--split", default=50, type=int, help="Percent of devices (or requests) on B.")
@click.option("--on-device", is_flag=True, help="Split requests on each device instead.")
@click.option("--selector", "sel", default="")
@click.option(
    "--min-effect",
    default=None,
    help="Smallest p50 latency difference that matters (0.5ms or 5%); below it the verdict is "
    "'no practical difference'.",
)
@click.pass_obj
def experiment_start(
    obj: Ctx,
    model: str,
    a: int,
    b: int,
    split: int,
    on_device: bool,
    sel: str,
    min_effect: str | None,
) -> None:
    """Start an experiment between versions A and B of MODEL."""
    body: dict[str, Any] = {
        "model": model,
        "a": a,
        "b": b,
        "split": split,
        "on_device": on_device,
        "selector": selector(sel, "--selector"),
    }
    if min_effect:
        from ..api import min_effect as parse_effect

        parse_effect(min_effect, "--min-effect")  # a bad value is an argument error here
        body["min_effect"] = min_effect
    with obj.client() as client:
        eid = client.start_experiment(body)
    click.echo(
        f"experiment {eid} started: {model} v{a} vs v{b}, {split}% on B"
        f"{' (on device)' if on_device else ''}"
    )


def _resolve_experiment(client: Any, eid: int | None) -> int:
    if eid is not None:
        return eid
    exps = client.experiments()
    running = [e for e in exps if e["status"] == "running"] or exps
    if not running:
        raise ConfigError("no experiment yet")
    return int(running[0]["id"])


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


@experiment.command("report")
@click.argument("experiment_id", required=False, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--min-effect",
    default=None,
    help="Smallest p50 latency difference that matters (0.5ms or 5%); overrides the experiment's.",
)
@click.pass_obj
def experiment_report(
    obj: Ctx, experiment_id: int | None, as_json: bool, min_effect: str | None
) -> None:
    """Per-arm requests, error rate, latency percentiles, intervals and the verdict."""
    if min_effect:
        from ..api import min_effect as parse_effect

        parse_effect(min_effect, "--min-effect")
    with obj.client() as client:
        rep = client.experiment_report(_resolve_experiment(client, experiment_id), min_effect)
    if as_json:
        echo_json(rep)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "arm", "version", "requests", "errors", "error rate", "p50 ms", "p95 ms", "p99 ms"
    )
    for arm in ("a", "b"):
        s = rep[arm]
        table.add_row(
            arm,
            str(s["version"]),
            str(s["requests"]),
            str(s["errors"]),
            f"{s['error_rate']:.4f}",
            _fmt(s["p50_ms"]),
            _fmt(s["p95_ms"]),
            _fmt(s["p99_ms"]),
        )
    console = Console()
    console.print(table)
    ci = rep["latency_p50_diff_ci_ms"]
    eci = rep["error_rate_diff_ci"]
    console.print(
        f"p50 latency b-a: {_fmt(rep['latency_p50_diff_ms'])} ms "
        f"[{_fmt(ci and ci[0])}, {_fmt(ci and ci[1])}] ({rep['confidence']:.0%} CI)"
    )
    console.print(
        f"error rate b-a: {_fmt(rep['error_rate_diff'], '.4f')} "
        f"[{_fmt(eci and eci[0], '.4f')}, {_fmt(eci and eci[1], '.4f')}]"
    )
    console.print(f"verdict: [bold]{rep['verdict']}[/bold] ({rep['why']})")


@experiment.command("promote")
@click.argument("experiment_id", required=False, type=int)
@click.option(
    "--version", "version", type=int, default=None, help="Promote this arm even without a verdict."
)
@click.pass_obj
def experiment_promote(obj: Ctx, experiment_id: int | None, version: int | None) -> None:
    """End the experiment and roll out the winner."""
    with obj.client() as client:
        rid = client.promote(_resolve_experiment(client, experiment_id), version)
    click.echo(f"rollout {rid} started for the winner")
