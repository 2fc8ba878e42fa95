"""``edgeserve fleet``: run the fleet server and drive it (releases, devices, rollouts,
experiments, broker files). Commands parse arguments and call :class:`.client.FleetClient` or
the library; errors are EdgeServeError subclasses, printed as one line by the root CLI.

Where the server is: ``--server URL --token T`` (or ``EDGESERVE_FLEET_URL`` /
``EDGESERVE_FLEET_TOKEN``), else read from ``--config fleet.toml`` (default ``./fleet.toml``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from edgeserve.errors import ConfigError

from . import cli_admin as admin
from .api import parse_duration, selector
from .cli_common import Ctx, echo_json

__all__ = ["fleet"]


@click.group()
@click.option("--server", envvar="EDGESERVE_FLEET_URL", help="Fleet server URL.")
@click.option("--token", envvar="EDGESERVE_FLEET_TOKEN", help="Operator token.")
@click.option(
    "--config",
    "config",
    envvar="EDGESERVE_FLEET_CONFIG",
    type=click.Path(dir_okay=False),
    help="fleet.toml (default ./fleet.toml).",
)
@click.pass_context
def fleet(ctx: click.Context, server: str | None, token: str | None, config: str | None) -> None:
    """Run the fleet server; release, roll out and experiment across devices."""
    ctx.obj = Ctx(server, token, config)


@fleet.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="fleet.toml (default: the group's --config or ./fleet.toml).",
)
@click.option(
    "--embedded-broker",
    is_flag=True,
    help="Also run an MQTT broker in-process on [broker] url (one-machine setups).",
)
@click.pass_obj
def serve(obj: Ctx, config_path: str | None, embedded_broker: bool) -> None:
    """Run the fleet server (HTTP API, web console at /ui/, artifacts, MQTT, controller)."""
    from .config import load_config
    from .server import FleetServer

    cfg = load_config(config_path or obj.config or "fleet.toml")
    # the start line, broker outages and recoveries are shown without -v
    status = logging.getLogger("edgeserve.fleet_server.broker_status")
    if status.getEffectiveLevel() > logging.INFO:
        status.setLevel(logging.INFO)
    FleetServer(cfg).serve(embedded_broker=embedded_broker)


# -- devices ---------------------------------------------------------------------------------


@fleet.group()
def device() -> None:
    """Register and list devices."""


def _agent_snippet(creds: dict[str, Any], trust_anchor: str = "/etc/edgeserve/root.json") -> str:
    # keys of agent/fleet_config.py (the agent's [fleet] table)
    return (
        "[fleet]\n"
        f'broker = "{creds["broker_url"]}"\n'
        f'fleet = "{creds["fleet"]}"\n'
        f'device = "{creds["id"]}"\n'
        f'username = "{creds["username"]}"\n'
        f'password = "{creds["password"]}"\n'
        f'prefix = "{creds["prefix"]}"\n'
        f'server_url = "{creds["server_url"]}"\n'
        f'trust_anchor = "{trust_anchor}"   # keys/root.json, copied to the device\n'
    )


@device.command("add")
@click.argument("device_id")
@click.option("--tags", default="", help="k=v,k2=v2")
@click.option("--json", "as_json", is_flag=True, help="Print the credentials as JSON.")
@click.option(
    "--agent-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the device's agent.toml here (mode 0600).",
)
@click.option(
    "--trust-anchor",
    default="/etc/edgeserve/root.json",
    show_default=True,
    help="Where the device finds this fleet's keys/root.json (a local file: its absolute path).",
)
@click.pass_obj
def device_add(
    obj: Ctx,
    device_id: str,
    tags: str,
    as_json: bool,
    agent_config: Path | None,
    trust_anchor: str,
) -> None:
    """Register DEVICE_ID; print its broker credentials (shown once) and an agent.toml snippet."""
    with obj.client() as client:
        creds = client.add_device(device_id, selector(tags, "--tags"))
    if Path(trust_anchor).is_file():  # this machine runs the agent too: pin the real file
        trust_anchor = str(Path(trust_anchor).resolve())
    snippet = _agent_snippet(creds, trust_anchor)
    if agent_config is not None:
        from edgeserve.fsutil import write_atomic

        write_atomic(agent_config, snippet.encode(), 0o600)
    if as_json:
        echo_json(creds)
        return
    click.echo(
        f"device {creds['id']} registered; broker user {creds['username']}, "
        f"password {creds['password']} (shown once)"
    )
    click.echo("run `edgeserve fleet broker-config --out DIR` and reload Mosquitto (SIGHUP)")
    if agent_config is not None:
        click.echo(f"wrote {agent_config}: its agent.toml ([fleet] table)")
    else:
        click.echo("\n# agent.toml\n" + snippet)


@device.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def device_list(obj: Ctx, as_json: bool) -> None:
    """Devices, their presence and what they run."""
    with obj.client() as client:
        devices = client.devices()
    if as_json:
        echo_json(devices)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("device", "tags", "presence", "models", "seq")
    for d in devices:
        models = ", ".join(f"{n} v{m['active']} {m['state']}" for n, m in d["models"].items())
        tags = ",".join(f"{k}={v}" for k, v in d["tags"].items())
        table.add_row(d["id"], tags, d["presence"], models or "-", str(d["desired_seq"]))
    Console().print(table)


# -- rollouts --------------------------------------------------------------------------------


@fleet.group()
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
        f"{len(st['devices'])} devices; {soak_text}"
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


# -- experiments -----------------------------------------------------------------------------


@fleet.group()
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
        from .api import min_effect as parse_effect

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
        from .api import min_effect as parse_effect

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


# -- operations without a group of their own (cli_admin.py) ------------------------------------

for _command in (admin.init, admin.broker_config, admin.release, admin.audit, admin.stats):
    fleet.add_command(_command)
