"""A/B experiments: two versions of a model split across devices or on each device.

Across devices, a device whose bucket ``hash(device, experiment)`` is below ``split`` runs B and
the others run A. On the device, every matching device runs A with the agent's A/B alias
sending ``split`` percent of requests to B (:class:`edgeserve.protocol.Split`). Either way the
arms are told apart in telemetry by model version, and :func:`report` compares them with
:func:`.stats.compare`. ``promote`` starts a rollout of the winner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeserve.errors import ConfigError, ConflictError, NotFoundError

from .rollout import controller as c
from .rollout import create_rollout, matches
from .stats import A_BETTER, B_BETTER, MinEffect, Window, compare
from .store import Store, Target

__all__ = [
    "arm_telemetry",
    "experiment",
    "promote",
    "report",
    "start_experiment",
    "stop_experiment",
]


def start_experiment(
    store: Store,
    model: str,
    a: int,
    b: int,
    split: int,
    on_device: bool,
    selector: Mapping[str, str],
    actor: str,
    min_effect: MinEffect | None = None,
) -> tuple[int, set[str]]:
    """Start an experiment; return its id and the devices whose desired state changed.

    ``min_effect`` is the smallest latency difference that matters for its verdicts.

    Raises:
        NotFoundError: a version was never released.
        ConfigError: bad split, same versions, no matching device, or the model is busy.
    """
    if a == b or not 0 < split < 100:
        raise ConfigError("an experiment needs two different versions and 0 < split < 100")
    store.release(model, a)
    store.release(model, b)
    with store.transaction():
        rollout = store.active_rollout_of(model)
        if rollout is not None:
            raise ConflictError(f"rollout {rollout} of {model} is active; finish it first")
        running = store.running_experiment_of(model)
        if running is not None:
            raise ConflictError(f"experiment {running} of {model} is active; finish it first")
        eid = store.next_experiment_id()
        devices = [d.id for d in store.devices() if matches(d.tags, selector)]
        if not devices:
            raise ConfigError(f"no device matches selector {dict(selector)}")
        tag = f"exp-{eid}"
        targets = []
        for dev in devices:
            if on_device:
                target = Target(model, a, True, {"b_version": b, "weight_b": split}, tag)
            else:
                arm_b = c.bucket(dev, f"experiment:{eid}") < split
                target = Target(model, b if arm_b else a, True, None, tag)
            targets.append((dev, target))
        store.set_targets(model, targets)
        spec = {
            "model": model,
            "a": a,
            "b": b,
            "split": split,
            "on_device": on_device,
            "selector": dict(selector),
            "devices": devices,
            "min_effect": None if min_effect is None else min_effect.to_dict(),
        }
        store.add_experiment(eid, model, spec)
        store.audit(
            actor,
            "experiment.start",
            f"experiment:{eid}",
            "operator request",
            {k: v for k, v in spec.items() if k != "devices"} | {"count": len(devices)},
        )
    return eid, set(devices)


def experiment(store: Store, eid: int) -> dict[str, Any]:
    """One experiment's row as a dict.

    Raises:
        NotFoundError: no such experiment.
    """
    row = store.experiment_row(eid)
    if row is None:
        raise NotFoundError(f"no experiment {eid}")
    return {
        "id": row.id,
        "model": row.model,
        **row.spec,
        "status": row.status,
        "created": row.created,
        "ended": row.ended,
        "rollout": row.rollout,
    }


def report(
    store: Store, eid: int, *, min_requests: int = 100, min_effect: MinEffect | None = None
) -> dict[str, Any]:
    """Per-arm request count, error rate and latency percentiles, the b - a differences with
    95% intervals and a verdict.

    On-device experiments count exactly the telemetry windows the agents labelled with this
    experiment: an agent closes its windows when a split starts, changes or ends, so those
    windows hold only requests routed through the split, and their per-arm counts are the
    agents' ``edgeserve_ab_requests_total``. Experiments across devices count the windows that
    began after the experiment started (less 1 s for clock differences).

    Args:
        store: the fleet store.
        eid: the experiment.
        min_requests: requests per arm before any verdict.
        min_effect: the smallest latency difference that matters (default: the experiment's,
            else none).

    Raises:
        NotFoundError: no such experiment.
    """
    exp = experiment(store, eid)
    if min_effect is None and exp.get("min_effect"):
        min_effect = MinEffect(**exp["min_effect"])
    arms = {}
    for arm in ("a", "b"):
        rows = arm_telemetry(store, exp, arm)
        arms[arm] = (exp[arm], [Window(int(r[2]), int(r[3]), r[4], r[5], r[6]) for r in rows])
    result = compare(arms["a"], arms["b"], min_requests=min_requests, min_effect=min_effect)
    return {
        "experiment": {k: v for k, v in exp.items() if k != "devices"},
        "devices": len(exp["devices"]),
        **result.to_dict(),
    }


def arm_telemetry(store: Store, exp: Mapping[str, Any], arm: str) -> list[tuple[Any, ...]]:
    """The telemetry windows that count for one arm (``"a"`` or ``"b"``) of an experiment.

    An on-device split tags its windows with the experiment; a fleet split counts the arm's
    version on the experiment's devices since it started (1 s of slack for the clocks of
    devices and server).
    """
    if exp.get("on_device"):
        return store.telemetry(
            exp["model"], exp[arm], devices=exp["devices"], experiment=f"exp-{exp['id']}"
        )
    return store.telemetry(
        exp["model"], exp[arm], since=exp["created"] - 1.0, devices=exp["devices"]
    )


def stop_experiment(store: Store, eid: int, actor: str, status: str = "stopped") -> None:
    """Mark an experiment finished (devices keep their targets until a rollout changes them).

    Raises:
        ConfigError: not running.
    """
    exp = experiment(store, eid)
    if exp["status"] != "running":
        raise ConfigError(f"experiment {eid} is {exp['status']}")
    store.end_experiment(eid, status)
    store.audit(actor, f"experiment.{status}", f"experiment:{eid}", "operator request")


def promote(
    store: Store,
    eid: int,
    actor: str,
    *,
    version: int | None = None,
    phases: tuple[int, ...] = (100,),
    soak_s: float = 0.0,
    install_timeout_s: float = 600.0,
) -> int:
    """End the experiment and start a rollout of its winner (or of ``version`` when the
    operator overrides a ``no difference yet`` verdict). Returns the rollout id.

    Raises:
        ConfigError: no winner and no explicit version, or a version outside the experiment.
    """
    exp = experiment(store, eid)
    rep = report(store, eid)
    if version is None:
        if rep["verdict"] not in (A_BETTER, B_BETTER):
            raise ConfigError(
                f"experiment {eid}: {rep['verdict']} ({rep['why']}); "
                "pass --version to promote anyway"
            )
        version = exp["a"] if rep["verdict"] == A_BETTER else exp["b"]
    if version not in (exp["a"], exp["b"]):
        raise ConfigError(f"version {version} is not an arm of experiment {eid}")
    stop_experiment(store, eid, actor, status="promoted")
    spec = c.RolloutSpec(
        model=exp["model"],
        version=version,
        selector=exp["selector"],
        phases=phases,
        soak_s=soak_s,
        max_failure_pct=100.0,
        min_devices=1,
        install_timeout_s=install_timeout_s,
    )
    rid = create_rollout(store, spec, actor)
    store.set_experiment_rollout(eid, rid)
    store.audit(
        actor,
        "experiment.promote",
        f"experiment:{eid}",
        f"verdict {rep['verdict']}: {rep['why']}",
        {"version": version, "rollout": rid},
    )
    return rid
