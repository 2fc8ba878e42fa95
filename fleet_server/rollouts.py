"""Rollouts in the store: create, snapshot for :func:`.controller.step`, apply its decisions,
operator actions, status. Every decision and action is written to the audit log with its reason.

Functions here return the set of devices whose desired state changed; the engine re-signs and
publishes for those (keeping MQTT out of the database code).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from edgeserve.errors import ConfigError, ConflictError, NotFoundError

from . import controller as c
from .store import ACTIVE_STATUSES, RolloutRow, Store, Target

__all__ = [
    "allowed_actions",
    "apply_decisions",
    "apply_reports",
    "create_rollout",
    "load_rollout",
    "matches",
    "operator_action",
    "progress",
    "running_rollouts",
]

ACTIONS = ("pause", "resume", "abort", "rollback")


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
    return [_state(r) for r in reversed(store.rollouts(("running",)))]


def _enroll(store: Store, rollout: int, spec: c.RolloutSpec, now: float) -> None:
    """Add devices that match the selector and are not yet part of the rollout (devices
    registered mid-rollout join it; their bucket decides their phase)."""
    known = store.rollout_members(rollout)
    targets = store.target_versions(spec.model)
    rows = []
    for dev in store.devices():
        if dev.id in known or not matches(dev.tags, spec.selector):
            continue
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


def progress(store: Store, state: c.RolloutState, now: float) -> list[c.DeviceProgress]:
    """Enroll newly matching devices, then every device's progress."""
    _enroll(store, state.id, state.spec, now)
    return [c.DeviceProgress(*r) for r in store.rollout_progress(state.id)]


def _revert(store: Store, rollout: int, model: str, devices: Sequence[str], now: float) -> set[str]:
    """Point devices back at their baseline (operator-signed downgrade) or drop the model."""
    baselines = store.rollout_members(rollout)
    for d in devices:
        base = baselines.get(d)
        store.set_target(d, Target(model, int(base), allow_downgrade=True) if base else None, model)
    store.set_rollout_devices(rollout, devices, c.REVERTED, "reverted to baseline", now)
    return set(devices)


def _gated(gates: c.Gates, phase: int) -> dict[str, Any]:
    return {**gates.to_dict(), "phase": phase}


def _record_failure(
    store: Store,
    rollout: int,
    spec: c.RolloutSpec,
    device: str,
    state: str,
    reason_code: str,
    error: str,
    phase: int,
) -> None:
    """Keep a device failure (its own table, never touched by a revert) and audit it."""
    store.add_device_failure(
        rollout, device, spec.model, spec.version, state, reason_code, error, phase
    )
    store.audit(
        "device",
        "rollout.device_failed",
        f"rollout:{rollout}",
        f"{device}: {state} {reason_code}: {error}"[:300],
        {
            "device": device,
            "state": state,
            "reason_code": reason_code,
            "error": error[:500],
            "version": spec.version,
            "phase": phase,
        },
    )


def apply_decisions(
    store: Store, state: c.RolloutState, decisions: Sequence[c.Decision], gates: c.Gates, now: float
) -> set[str]:
    """Persist the controller's decisions; return devices whose desired state changed."""
    changed: set[str] = set()
    spec, rid, subject = state.spec, state.id, f"rollout:{state.id}"
    # the phase each decision belongs to: NextPhase moves it, so an Assign that follows names
    # the phase its devices enter, not the one just left
    phase = spec.phases[min(state.phase_index, len(spec.phases) - 1)]
    with store.transaction():
        row = store.rollout(rid)
        if row is None or row.status != state.status:
            return changed  # an operator paused/aborted it meanwhile: drop stale decisions
        for d in decisions:
            if isinstance(d, c.Assign):
                current = store.rollout_members(rid)
                wanted = set(d.devices)
                already = {
                    dev.id
                    for dev in store.devices_in(list(wanted))
                    if _device_state(
                        (dev.reported.get("models") or {}).get(spec.model) or {}, spec.version
                    )
                    == (c.ACTIVE, "active")
                }
                for dev in d.devices:
                    base = current.get(dev)
                    downgrade = base is not None and int(base) > spec.version
                    store.set_target(dev, Target(spec.model, spec.version, downgrade), spec.model)
                # A device already running the version may not report again (reports are
                # coalesced by state), so it counts as active from the start.
                store.set_rollout_devices(
                    rid, wanted - already, c.INSTALLING, "assigned", now, assigned=True
                )
                store.set_rollout_devices(
                    rid, already, c.ACTIVE, "already active", now, assigned=True
                )
                changed.update(d.devices)
                store.audit(
                    "controller",
                    "rollout.assign",
                    subject,
                    f"{len(d.devices)} devices enter phase {phase}%",
                    {"devices": list(d.devices)[:50], "phase": phase},
                )
            elif isinstance(d, c.MarkFailed):
                store.set_rollout_devices(rid, [d.device], c.FAILED, d.reason, now)
                _record_failure(
                    store, rid, spec, d.device, "TIMEOUT", "install_timeout", d.reason, phase
                )
            elif isinstance(d, c.Settled):
                store.set_phase_settled(rid, d.at)
            elif isinstance(d, c.NextPhase):
                store.set_phase(rid, d.index)
                phase = spec.phases[d.index]
                store.audit(
                    "controller",
                    "rollout.next_phase",
                    subject,
                    d.reason,
                    {"phase": phase, "gates": gates.to_dict()},
                )
            elif isinstance(d, c.Complete):
                store.set_rollout_status(rid, "completed", d.reason)
                store.audit(
                    "controller", "rollout.complete", subject, d.reason, _gated(gates, phase)
                )
            elif isinstance(d, c.GateFailed):
                reason = f"gate {d.gate} failed: {d.reason}"
                store.set_rollout_status(rid, "paused", reason)
                store.audit(
                    "controller", "rollout.gate_failed", subject, reason, _gated(gates, phase)
                )
            elif isinstance(d, c.Revert):
                changed |= _revert(store, rid, spec.model, d.devices, now)
                store.audit(
                    "controller",
                    "rollout.revert",
                    subject,
                    d.reason,
                    {"devices": list(d.devices)[:50], "count": len(d.devices), "phase": phase},
                )
        store.set_gates(rid, gates.to_dict(), now)
    return changed


def allowed_actions(status: str) -> tuple[str, ...]:
    """The operator actions a rollout in ``status`` accepts, in :data:`ACTIONS` order."""
    allowed = {
        "pause": ("running",),
        "resume": ("paused",),
        "abort": ACTIVE_STATUSES,
        "rollback": (*ACTIVE_STATUSES, "completed", "aborted"),
    }
    return tuple(a for a in ACTIONS if status in allowed[a])


def operator_action(
    store: Store, rollout_id: int, action: str, actor: str, reason: str, now: float | None = None
) -> set[str]:
    """Pause, resume, abort or roll back a rollout; return devices whose desired changed.

    ``abort`` stops assigning and leaves devices where they are; ``rollback`` reverts every
    device the rollout touched to its baseline; ``resume`` also restarts a rollout paused by a
    gate (its reverted devices are assigned again).

    Raises:
        ConfigError: unknown action or not allowed in the current status.
        NotFoundError: no such rollout.
    """
    now = now or time.time()
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    state = load_rollout(store, rollout_id)
    if action not in allowed_actions(state.status):
        raise ConfigError(f"cannot {action} rollout {rollout_id}: it is {state.status}")
    new_status = {
        "pause": "paused",
        "resume": "running",
        "abort": "aborted",
        "rollback": "rolled_back",
    }[action]
    changed: set[str] = set()
    with store.transaction():
        if action == "resume":
            store.reset_rollout_devices(rollout_id, (c.REVERTED, c.FAILED), c.PENDING)
        if action == "rollback":
            touched = store.rollout_devices_in(rollout_id, (c.INSTALLING, c.ACTIVE, c.FAILED))
            changed = _revert(store, rollout_id, state.spec.model, touched, now)
        store.set_rollout_status(
            rollout_id, new_status, f"{action} by {actor}: {reason}", updated=now
        )
        store.audit(
            actor,
            f"rollout.{action}",
            f"rollout:{rollout_id}",
            reason,
            {"devices_reverted": len(changed)},
        )
    return changed


def _device_state(status: Mapping[str, Any], version: int) -> tuple[str, str] | None:
    """Fold an agent's model status into a rollout device state (None: no news for us)."""
    state = status.get("state")
    if status.get("active") == version and state == "ACTIVE":
        return c.ACTIVE, "active"
    if status.get("target") == version and state in ("FAILED", "REJECTED", "ROLLED_BACK"):
        why = status.get("reason_code") or status.get("error") or ""
        return c.FAILED, f"{state}: {why}"[:200]
    if status.get("target") == version:
        return c.INSTALLING, str(state)
    return None


def apply_reports(
    store: Store, reports: Sequence[tuple[str, Mapping[str, Any]]], now: float
) -> bool:
    """Fold reported documents into the progress of active rollouts; True if any changed."""
    active = store.rollouts(ACTIVE_STATUSES)
    if not active or not reports:
        return False
    latest = dict(reports)  # the newest report per device wins
    changed = False
    with store.transaction():
        for row in reversed(active):  # oldest first
            rid, model, version = row.id, row.model, row.version
            spec = c.RolloutSpec.from_dict(row.spec)
            phase = row.phase_percent
            # only the devices of this batch: a report batch is small, a rollout may be large
            rows = store.rollout_device_states(
                rid, list(latest), (c.INSTALLING, c.ACTIVE, c.FAILED)
            )
            updates = []
            for dev, state, detail in rows:
                doc = latest.get(dev)
                status = ((doc or {}).get("models") or {}).get(model)
                if not status:
                    continue
                folded = _device_state(status, int(version))
                if folded and folded != (state, detail):
                    updates.append((dev, folded[0], folded[1]))
                    if folded[0] == c.FAILED:
                        _record_failure(
                            store,
                            int(rid),
                            spec,
                            dev,
                            str(status.get("state")),
                            str(status.get("reason_code") or "unknown"),
                            str(status.get("error") or ""),
                            phase,
                        )
            store.update_rollout_device_states(rid, updates, now)
            changed = changed or bool(updates)
    return changed
