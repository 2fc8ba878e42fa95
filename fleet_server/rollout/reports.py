"""Folding what devices report (their install state per model) into the progress of
the active rollouts; a failure is kept with its reason code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..store import Store
from . import controller as c
from .decisions import record_failure
from .lifecycle import ACTIVE

__all__ = ["apply_reports"]


def apply_reports(
    store: Store, reports: Sequence[tuple[str, Mapping[str, Any]]], now: float
) -> bool:
    """Fold reported documents into the progress of active rollouts; True if any changed."""
    active = store.rollouts(ACTIVE)
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
                folded = c.device_state(status, int(version))
                if folded and folded != (state, detail):
                    updates.append((dev, folded[0], folded[1]))
                    if folded[0] == c.FAILED:
                        record_failure(
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
