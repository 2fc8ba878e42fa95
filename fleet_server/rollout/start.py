"""Starting a rollout: the devices its selector matches enroll (also those registered
mid-rollout), each with a stable bucket and the version it ran before (its baseline); and
loading a rollout's state and progress for :func:`.controller.step`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from edgeserve.errors import ConfigError, ConflictError, NotFoundError

from ..store import RolloutRow, Store
from . import controller as c
from .lifecycle import RUNNING

__all__ = ["create_rollout", "load_rollout", "matches", "progress", "running_rollouts"]


def matches(tags: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """True when every ``key=value`` of the selector is among the device's tags."""
    return all(tags.get(k) == v for k, v in selector.items())


def _active_version(reported: Mapping[str, Any], model: str) -> int | None:
    status = (reported.get("models") or {}).get(model) or {}
    active = status.get("active")
    return int(active) if isinstance(active, int) else None


def load_rollout(store: Store, rollout_id: int) -> c.RolloutState:
    """A rollout's state.

    Raises:
        NotFoundError: no such rollout.
    """
    row = store.rollout(rollout_id)
    if row is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    return _state(row)


def _state(row: RolloutRow) -> c.RolloutState:
    return c.RolloutState(
        row.id, c.RolloutSpec.from_dict(row.spec), row.status, row.phase_index, row.phase_started
    )


def running_rollouts(store: Store) -> list[c.RolloutState]:
    """Rollouts with status ``running``."""
    return [_state(r) for r in reversed(store.rollouts((RUNNING,)))]


def _enroll(store: Store, rollout: int, spec: c.RolloutSpec, now: float) -> None:
    """Add devices that match the selector and are not yet part of the rollout (devices
    registered mid-rollout join it; their bucket decides their phase)."""
    # only the devices outside the rollout are read: this runs on every controller tick
    joining = [d for d in store.devices_outside_rollout(rollout) if matches(d.tags, spec.selector)]
    if not joining:
        return
    targets = store.target_versions(spec.model)
    rows = []
    for dev in joining:
        baseline = _active_version(dev.reported, spec.model) or targets.get(dev.id)
        rows.append((dev.id, c.bucket(dev.id, f"rollout:{rollout}"), baseline))
    store.add_rollout_devices(rollout, rows, c.PENDING, now)


def create_rollout(store: Store, spec: c.RolloutSpec, actor: str, now: float | None = None) -> int:
    """Start a rollout.

    Raises:
        NotFoundError: the release does not exist.
        ConfigError: another rollout of the model is running or paused; bad phases.
    """
    now = now or time.time()
    store.release(spec.model, spec.version)
    if (
        not spec.phases
        or list(spec.phases) != sorted(set(spec.phases))
        or not (spec.phases[0] > 0 and spec.phases[-1] == 100)
    ):
        raise ConfigError("phases must increase strictly and end at 100, e.g. 5,25,100")
    with store.transaction():
        busy = store.active_rollout_of(spec.model)
        if busy is not None:
            raise ConflictError(
                f"rollout {busy} of {spec.model} is still active; abort or finish it first"
            )
        exp = store.running_experiment_of(spec.model)
        if exp is not None:
            raise ConflictError(
                f"experiment {exp} of {spec.model} is still active; promote or stop it first"
            )
        rid = store.add_rollout(spec.model, spec.version, spec.to_dict(), now)
        _enroll(store, rid, spec, now)
        if not store.rollout_members(rid):
            raise ConfigError(f"no device matches selector {dict(spec.selector)}")
        store.audit(actor, "rollout.start", f"rollout:{rid}", "operator request", spec.to_dict())
    return rid


def progress(store: Store, state: c.RolloutState, now: float) -> c.Progress:
    """Enroll newly matching devices, then the rollout's progress at its phase: counted by the
    database, with only the devices a decision may name (the phase's pending devices, and the
    installs older than the install timeout)."""
    _enroll(store, state.id, state.spec, now)
    spec = state.spec
    percent = spec.phases[min(state.phase_index, len(spec.phases) - 1)]
    return c.Progress(
        counts=store.rollout_state_counts(state.id),
        unsettled=store.rollout_unsettled(state.id, percent, (c.ACTIVE, c.FAILED)),
        pending=[
            c.DeviceProgress(*r) for r in store.rollout_in_state_below(state.id, c.PENDING, percent)
        ],
        installing=[
            c.DeviceProgress(*r)
            for r in store.rollout_assigned_before(
                state.id, c.INSTALLING, now - spec.install_timeout_s
            )
        ],
    )
