"""Rollouts in the store: create, snapshot for :func:`.controller.step`, apply its decisions,
operator actions, status. Every decision and action is written to the audit log with its reason.

Functions here return the set of devices whose desired state changed; the engine re-signs and
publishes for those (keeping MQTT out of the database code).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgeserve.errors import ConfigError, NotFoundError

from . import controller as c
from .store import Store, Target

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

ACTIVE_STATUSES = ("running", "paused")
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
    row = store.db.one(
        "SELECT id, spec, status, phase_index, phase_started FROM rollouts WHERE id = ?",
        (rollout_id,),
    )
    if row is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    return c.RolloutState(
        int(row[0]), c.RolloutSpec.from_dict(json.loads(row[1])), row[2], int(row[3]), row[4]
    )


def running_rollouts(store: Store) -> list[c.RolloutState]:
    """Rollouts with status ``running``."""
    rows = store.db.query("SELECT id FROM rollouts WHERE status = 'running' ORDER BY id")
    return [load_rollout(store, int(r[0])) for r in rows]


def _enroll(store: Store, rollout: int, spec: c.RolloutSpec, now: float) -> None:
    """Add devices that match the selector and are not yet part of the rollout (devices
    registered mid-rollout join it; their bucket decides their phase)."""
    known = {
        r[0]
        for r in store.db.query("SELECT device FROM rollout_devices WHERE rollout = ?", (rollout,))
    }
    targets = store.target_versions(spec.model)
    rows = []
    for dev in store.devices():
        if dev.id in known or not matches(dev.tags, spec.selector):
            continue
        baseline = _active_version(dev.reported, spec.model) or targets.get(dev.id)
        rows.append(
            (
                rollout,
                dev.id,
                c.bucket(dev.id, f"rollout:{rollout}"),
                baseline,
                None,
                c.PENDING,
                "",
                now,
            )
        )
    store.db.executemany("INSERT INTO rollout_devices VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


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
    with store.db.transaction():
        busy = store.db.one(
            "SELECT id FROM rollouts WHERE model = ? AND status IN ('running', 'paused')",
            (spec.model,),
        )
        if busy:
            raise ConfigError(
                f"rollout {busy[0]} of {spec.model} is still active; abort or finish it first"
            )
        exp = store.db.one(
            "SELECT id FROM experiments WHERE model = ? AND status = 'running'", (spec.model,)
        )
        if exp:
            raise ConfigError(
                f"experiment {exp[0]} of {spec.model} is still active; promote or stop it first"
            )
        rid = store.next_id("rollouts")
        store.db.execute(
            "INSERT INTO rollouts (id, model, version, spec, status, phase_index, phase_started,"
            " created, updated) VALUES (?, ?, ?, ?, 'running', 0, NULL, ?, ?)",
            (rid, spec.model, spec.version, json.dumps(spec.to_dict()), now, now),
        )
        _enroll(store, rid, spec, now)
        if not store.db.one("SELECT 1 FROM rollout_devices WHERE rollout = ?", (rid,)):
            raise ConfigError(f"no device matches selector {dict(spec.selector)}")
        store.audit(actor, "rollout.start", f"rollout:{rid}", "operator request", spec.to_dict())
    return rid


def progress(store: Store, state: c.RolloutState, now: float) -> list[c.DeviceProgress]:
    """Enroll newly matching devices, then every device's progress."""
    _enroll(store, state.id, state.spec, now)
    rows = store.db.query(
        "SELECT device, bucket, state, assigned FROM rollout_devices WHERE rollout = ? "
        "ORDER BY bucket",
        (state.id,),
    )
    return [c.DeviceProgress(r[0], float(r[1]), r[2], r[3]) for r in rows]


def _set_devices(
    store: Store,
    rollout: int,
    devices: Iterable[str],
    state: str,
    detail: str,
    now: float,
    assigned: bool = False,
) -> None:
    extra = ", assigned = ?" if assigned else ""
    params: list[Any] = [state, detail, now] + ([now] if assigned else [])
    store.db.executemany(
        f"UPDATE rollout_devices SET state = ?, detail = ?, updated = ?{extra} "
        "WHERE rollout = ? AND device = ?",
        [(*params, rollout, d) for d in devices],
    )


def _revert(store: Store, rollout: int, model: str, devices: Sequence[str], now: float) -> set[str]:
    """Point devices back at their baseline (operator-signed downgrade) or drop the model."""
    baselines = dict(
        store.db.query("SELECT device, baseline FROM rollout_devices WHERE rollout = ?", (rollout,))
    )
    for d in devices:
        base = baselines.get(d)
        store.set_target(d, Target(model, int(base), allow_downgrade=True) if base else None, model)
    _set_devices(store, rollout, devices, c.REVERTED, "reverted to baseline", now)
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
    with store.db.transaction():
        row = store.db.one("SELECT status FROM rollouts WHERE id = ?", (rid,))
        if row is None or row[0] != state.status:
            return changed  # an operator paused/aborted it meanwhile: drop stale decisions
        for d in decisions:
            if isinstance(d, c.Assign):
                current = dict(
                    store.db.query(
                        "SELECT device, baseline FROM rollout_devices WHERE rollout = ?", (rid,)
                    )
                )
                wanted = set(d.devices)
                already = {
                    dev.id
                    for dev in store.devices()
                    if dev.id in wanted
                    and _device_state(
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
                _set_devices(
                    store, rid, wanted - already, c.INSTALLING, "assigned", now, assigned=True
                )
                _set_devices(store, rid, already, c.ACTIVE, "already active", now, assigned=True)
                changed.update(d.devices)
                store.audit(
                    "controller",
                    "rollout.assign",
                    subject,
                    f"{len(d.devices)} devices enter phase {phase}%",
                    {"devices": list(d.devices)[:50], "phase": phase},
                )
            elif isinstance(d, c.MarkFailed):
                _set_devices(store, rid, [d.device], c.FAILED, d.reason, now)
                _record_failure(
                    store, rid, spec, d.device, "TIMEOUT", "install_timeout", d.reason, phase
                )
            elif isinstance(d, c.Settled):
                store.db.execute("UPDATE rollouts SET phase_started = ? WHERE id = ?", (d.at, rid))
            elif isinstance(d, c.NextPhase):
                store.db.execute(
                    "UPDATE rollouts SET phase_index = ?, phase_started = NULL WHERE id = ?",
                    (d.index, rid),
                )
                phase = spec.phases[d.index]
                store.audit(
                    "controller",
                    "rollout.next_phase",
                    subject,
                    d.reason,
                    {"phase": phase, "gates": gates.to_dict()},
                )
            elif isinstance(d, c.Complete):
                store.db.execute(
                    "UPDATE rollouts SET status = 'completed', reason = ? WHERE id = ?",
                    (d.reason, rid),
                )
                store.audit(
                    "controller", "rollout.complete", subject, d.reason, _gated(gates, phase)
                )
            elif isinstance(d, c.GateFailed):
                reason = f"gate {d.gate} failed: {d.reason}"
                store.db.execute(
                    "UPDATE rollouts SET status = 'paused', reason = ? WHERE id = ?", (reason, rid)
                )
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
        store.db.execute(
            "UPDATE rollouts SET gates = ?, updated = ? WHERE id = ?",
            (json.dumps(gates.to_dict()), now, rid),
        )
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
    with store.db.transaction():
        if action == "resume":
            store.db.execute(
                "UPDATE rollout_devices SET state = ?, assigned = NULL WHERE rollout = ? AND "
                "state IN (?, ?)",
                (c.PENDING, rollout_id, c.REVERTED, c.FAILED),
            )
        if action == "rollback":
            touched = [
                r[0]
                for r in store.db.query(
                    "SELECT device FROM rollout_devices WHERE rollout = ? AND state IN (?, ?, ?)",
                    (rollout_id, c.INSTALLING, c.ACTIVE, c.FAILED),
                )
            ]
            changed = _revert(store, rollout_id, state.spec.model, touched, now)
        store.db.execute(
            "UPDATE rollouts SET status = ?, reason = ?, updated = ? WHERE id = ?",
            (new_status, f"{action} by {actor}: {reason}", now, rollout_id),
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
    active = store.db.query(
        "SELECT id, model, version, spec, phase_index FROM rollouts "
        "WHERE status IN ('running', 'paused')"
    )
    if not active or not reports:
        return False
    latest = dict(reports)  # the newest report per device wins
    changed = False
    with store.db.transaction():
        for rid, model, version, spec_json, phase_index in active:
            spec = c.RolloutSpec.from_dict(json.loads(spec_json))
            phase = spec.phases[min(int(phase_index), len(spec.phases) - 1)]
            rows = store.db.query(
                "SELECT device, state, detail FROM rollout_devices WHERE rollout = ? AND "
                "state IN (?, ?, ?)",
                (rid, c.INSTALLING, c.ACTIVE, c.FAILED),
            )
            updates = []
            for dev, state, detail in rows:
                doc = latest.get(dev)
                status = ((doc or {}).get("models") or {}).get(model)
                if not status:
                    continue
                folded = _device_state(status, int(version))
                if folded and folded != (state, detail):
                    updates.append((folded[0], folded[1], now, rid, dev))
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
            store.db.executemany(
                "UPDATE rollout_devices SET state = ?, detail = ?, updated = ? "
                "WHERE rollout = ? AND device = ?",
                updates,
            )
            changed = changed or bool(updates)
    return changed
