"""Applying the controller's decisions: assign devices the new version, mark timeouts
failed, move phases, complete or pause the rollout, revert devices to their baselines. Every
decision is written to the audit log with its reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..store import Store, Target
from . import controller as c
from .lifecycle import COMPLETE, FAIL, next_status

__all__ = ["apply_decisions", "record_failure", "revert"]


def revert(store: Store, rollout: int, model: str, devices: Sequence[str], now: float) -> set[str]:
    """Point devices back at their baseline (operator-signed downgrade) or drop the model."""
    baselines = store.rollout_members(rollout)
    targets = []
    for d in devices:
        base = baselines.get(d)
        targets.append((d, Target(model, int(base), allow_downgrade=True) if base else None))
    store.set_targets(model, targets)
    store.set_rollout_devices(rollout, devices, c.REVERTED, "reverted to baseline", now)
    return set(devices)


def _gated(gates: c.Gates, phase: int) -> dict[str, Any]:
    return {**gates.to_dict(), "phase": phase}


def record_failure(
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
        status = row.status
        for d in decisions:
            if isinstance(d, c.Assign):
                current = store.rollout_members(rid)
                wanted = set(d.devices)
                already = {
                    dev.id
                    for dev in store.devices_in(list(wanted))
                    if c.device_state(
                        (dev.reported.get("models") or {}).get(spec.model) or {}, spec.version
                    )
                    == (c.ACTIVE, "active")
                }
                # a device whose baseline is newer than the release is downgraded
                store.set_targets(
                    spec.model,
                    [
                        (
                            dev,
                            Target(
                                spec.model, spec.version, (current.get(dev) or 0) > spec.version
                            ),
                        )
                        for dev in d.devices
                    ],
                )
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
                record_failure(
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
                status = next_status(status, COMPLETE)
                store.set_rollout_status(rid, status, d.reason)
                store.audit(
                    "controller", "rollout.complete", subject, d.reason, _gated(gates, phase)
                )
            elif isinstance(d, c.GateFailed):
                reason = f"gate {d.gate} failed: {d.reason}"
                status = next_status(status, FAIL)
                store.set_rollout_status(rid, status, reason)
                store.audit(
                    "controller", "rollout.gate_failed", subject, reason, _gated(gates, phase)
                )
            elif isinstance(d, c.Revert):
                touched = store.rollout_devices_in(rid, c.TOUCHED)
                changed |= revert(store, rid, spec.model, touched, now)
                store.audit(
                    "controller",
                    "rollout.revert",
                    subject,
                    d.reason,
                    {"devices": sorted(touched)[:50], "count": len(touched), "phase": phase},
                )
        store.set_gates(rid, gates.to_dict(), now)
    return changed
