"""What an operator may do to a rollout (pause, resume, abort, roll back), checked
against :mod:`.lifecycle` and written to the audit log."""

from __future__ import annotations

import time

from edgeserve.errors import ConfigError, TransitionError

from ..store import Store
from . import controller as c
from .decisions import revert
from .lifecycle import ACTIONS, allowed_actions, next_status
from .start import load_rollout

__all__ = ["operator_action"]


def operator_action(
    store: Store, rollout_id: int, action: str, actor: str, reason: str, now: float | None = None
) -> set[str]:
    """Pause, resume, abort or roll back a rollout; return devices whose desired changed.

    ``abort`` stops assigning and leaves devices where they are; ``rollback`` reverts every
    device the rollout touched to its baseline; ``resume`` also restarts a rollout paused by a
    gate (its reverted devices are assigned again).

    Raises:
        ConfigError: unknown action.
        TransitionError: the action is not allowed in the current status.
        NotFoundError: no such rollout.
    """
    now = now or time.time()
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    state = load_rollout(store, rollout_id)
    if action not in allowed_actions(state.status):
        raise TransitionError(f"cannot {action} rollout {rollout_id}: it is {state.status}")
    new_status = next_status(state.status, action)
    changed: set[str] = set()
    with store.transaction():
        if action == "resume":
            store.reset_rollout_devices(rollout_id, (c.REVERTED, c.FAILED), c.PENDING)
        if action == "rollback":
            touched = store.rollout_devices_in(rollout_id, (c.INSTALLING, c.ACTIVE, c.FAILED))
            changed = revert(store, rollout_id, state.spec.model, touched, now)
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
