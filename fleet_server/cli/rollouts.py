"""``edgeserve fleet rollout``: start, status, and the operator actions (pause, resume,
abort, rollback)."""

from __future__ import annotations

from typing import Any

import click

from edgeserve.errors import ConfigError

from ..api import parse_duration, selector
from .common import Ctx, echo_json

__all__ = ["rollout"]


@click.group()
def rollout() -> None:
    """Staged rollouts with health gates."""


def _percent(value: str, what: str) -> float:
    try:
        return float(value.strip().rstrip("%"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a percentage", param_hint=what) from None


@rollout.command("start")
@click.option("--model", required=True)
@click.option("--version", "version", required=True, type=int)
@click.option("--selector", "sel", default="", help="k=v,... (all devices if empty)")
@click.option("--phases", default="100", help="Percents of matching devices, e.g. 5,25,100.")
@click.option("--soak", default="0s", help="Minimum time each phase runs settled (10m, 30s).")
@click.option("--max-failure-pct", default="0", help="Failure gate, percent of finished devices.")
@click.option("--min-devices", default=1, type=int, help="Devices finished before gates judge.")
@click.option("--max-latency-regression", default=None, help="p95 gate vs baseline, e.g. 20%.")
@click.option("--install-timeout", default=None, help="Per device, e.g. 10m (server default).")
@click.pass_obj
def rollout_start(
    obj: Ctx,
    model: str,
    version: int,
    sel: str,
    phases: str,
    soak: str,
    max_failure_pct: str,
    min_devices: int,
    max_latency_regression: str | None,
    install_timeout: str | None,
) -> None:
    """Start a staged rollout of MODEL VERSION."""
    try:
        phase_list = [int(p) for p in phases.split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{phases!r}: comma-separated integers", param_hint="--phases"
        ) from None
    spec: dict[str, Any] = {
        "model": model,
        "version": version,
        "selector": selector(sel, "--selector"),
        "phases": phase_list,
        "soak": parse_duration(soak, "--soak"),
        "max_failure_pct": _percent(max_failure_pct, "--max-failure-pct"),
        "min_devices": min_devices,
    }
    if max_latency_regression is not None:
        spec["max_latency_regression_pct"] = _percent(
            max_latency_regression, "--max-latency-regression"
        )
    if install_timeout is not None:
        spec["install_timeout"] = parse_duration(install_timeout, "--install-timeout")
    with obj.client() as client:
        rid = client.start_rollout(spec)
    click.echo(f"rollout {rid} started: {model} v{version}, phases {phase_list}")


def _resolve_rollout(client: Any, rollout_id: int | None) -> int:
    if rollout_id is not None:
        return rollout_id
    rollouts = client.rollouts()
    active = [r for r in rollouts if r["status"] in ("running", "paused")]
    pick = active or rollouts
    if not pick:
        raise ConfigError("no rollout yet")
    return int(pick[0]["id"])


def _print_status(st: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    spec = st["spec"]
    console.print(
        f"rollout {st['id']}: {st['model']} v{st['version']}  status [bold]"
        f"{st['status']}[/bold]  {st['reason']}"
    )
    phases = Table("phase", "percent", "state")
    for i, p in enumerate(spec["phases"]):
        state = (
            "done"
            if i < st["phase_index"] or st["status"] == "completed"
            else "current"
            if i == st["phase_index"]
            else "waiting"
        )
        phases.add_row(str(i + 1), f"{p}%", state)
    console.print(phases)
    soak = st.get("soak_left_s")
    soak_text = (
        f"soak left {soak:.0f}s"
        if soak is not None
        else "soak starts once every device of the phase is active or failed"
        if st["status"] == "running"
        else ""
    )
    console.print(
        f"phase {st['phase_percent']}% targets {st.get('phase_targets', '?')} of "
        f"{st['device_count']} devices; {soak_text}"
    )
    counts = Table(*st["counts"].keys(), title="devices")
    counts.add_row(*(str(v) for v in st["counts"].values()))
    console.print(counts)
    if st.get("installing"):
        console.print(
            "installing: " + ", ".join(f"{k} {v}" for k, v in sorted(st["installing"].items()))
        )
    g = st.get("gates") or {}
    gates = Table("gate", "value", "limit")
    gates.add_row(
        "failure",
        f"{g.get('failure_pct', 0):.1f}% ({g.get('failed', 0)} failed)",
        f"{spec['max_failure_pct']:g}% after {spec['min_devices']} devices",
    )
    reg = g.get("latency_regression_pct")
    limit = spec["max_latency_regression_pct"]
    gates.add_row(
        "p95 latency regression",
        "-" if reg is None else f"{reg:+.1f}%",
        "-" if limit is None else f"{limit:g}%",
    )
    gates.add_row("install timeout", "", f"{spec['install_timeout_s']:g}s")
    console.print(gates)
    shown = [d for d in st["devices"] if d["state"] != "pending" or d.get("outcome")]
    if shown:
        table = Table("device", "state", "detail", "outcome", "reason", "error")
        for d in shown[:100]:
            o = d.get("outcome") or {}
            table.add_row(
                d["device"],
                d["state"],
                d["detail"],
                str(o.get("state", "")),
                str(o.get("reason_code", "")),
                str(o.get("error", ""))[:80],
            )
        console.print(table)


@rollout.command("status")
@click.argument("rollout_id", required=False, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rollout_status(obj: Ctx, rollout_id: int | None, as_json: bool) -> None:
    """Phases, per-state device counts and gate values (the active or latest rollout)."""
    with obj.client() as client:
        st = client.rollout(_resolve_rollout(client, rollout_id))
    if as_json:
        echo_json(st)
    else:
        _print_status(st)


def _action(name: str) -> click.Command:
    @click.argument("rollout_id", required=False, type=int)
    @click.option("--reason", default="", help="Recorded in the audit log.")
    @click.pass_obj
    def command(obj: Ctx, rollout_id: int | None, reason: str) -> None:
        with obj.client() as client:
            st = client.rollout_action(_resolve_rollout(client, rollout_id), name, reason)
        click.echo(f"rollout {st['id']}: {st['status']} ({st['reason']})")

    command.__doc__ = {
        "pause": "Stop assigning devices (devices keep what they have).",
        "resume": "Continue a paused rollout (also after a failed gate).",
        "abort": "End the rollout; devices keep what they have.",
        "rollback": "End the rollout and set every device it touched back to its baseline.",
    }[name]
    return click.command(name)(command)


for _name in ("pause", "resume", "abort", "rollback"):
    rollout.add_command(_action(_name))
