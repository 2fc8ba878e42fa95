"""Read-only views of a rollout: what ``rollout status`` shows, and the latency the gate
judges (request-weighted p95 from telemetry)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from edgeserve.errors import NotFoundError

from ..store import Store
from . import controller as c
from .start import load_rollout

__all__ = ["latency_view", "rollout_status"]


def rollout_status(store: Store, rollout_id: int, devices: bool = True) -> dict[str, Any]:
    """Everything ``rollout status`` shows: spec, phase, per-state counts, gates, devices, log.

    ``devices=False`` leaves out the per-device rows (``devices``) and has the database count
    the states instead, so that polling a rollout of 100,000 devices stays cheap.
    """
    row = store.rollout(rollout_id)
    if row is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    state = load_rollout(store, rollout_id)
    counts = dict.fromkeys(c.DEVICE_STATES, 0)
    installing: dict[str, int] = {}
    phases = state.spec.phases
    percent = phases[min(state.phase_index, len(phases) - 1)]
    failures = store.device_failures(rollout_id)
    rows: list[dict[str, Any]] = []
    if devices:
        last_failure = {f["device"]: f for f in failures}
        members = store.rollout_devices(rollout_id)
        for dev, bucket, st, detail in members:
            f = last_failure.get(dev)
            rows.append(
                {
                    "device": dev,
                    "bucket": round(float(bucket), 3),
                    "state": st,
                    "detail": detail,
                    "outcome": None
                    if f is None
                    else {
                        k: f[k] for k in ("state", "reason_code", "error", "version", "phase", "ts")
                    },
                }
            )
        tally = [(d["state"], d["detail"], 1) for d in rows]
        targeted = sum(1 for m in members if m[1] < percent)  # as the controller counts
    else:
        tally = store.rollout_state_details(rollout_id)
        targeted = store.rollout_devices_below(rollout_id, percent)
    for st, detail, n in tally:
        counts[st] = counts.get(st, 0) + n
        if st == c.INSTALLING:  # the agent's install state (DOWNLOADING ... WARMING)
            installing[detail] = installing.get(detail, 0) + n
    settled_at = load_rollout(store, rollout_id).phase_settled
    soak_left = None
    if state.status == "running" and settled_at is not None:
        soak_left = max(0.0, state.spec.soak_s - (time.time() - float(settled_at)))
    return {
        "id": state.id,
        "model": state.spec.model,
        "version": state.spec.version,
        "status": state.status,
        "reason": row.reason,
        "phase_index": state.phase_index,
        "phase_percent": percent,
        # devices the current phase covers (bucket < percent), and how long it still soaks:
        # None until every one of them is active or failed
        "phase_targets": targeted,
        "soak_left_s": soak_left,
        "spec": state.spec.to_dict(),
        "counts": counts,
        "installing": installing,
        "gates": row.gates,
        "device_count": sum(counts.values()),
        **({"devices": rows} if devices else {}),
        "failures": failures,
        "created": row.created,
        "updated": row.updated,
        "audit": store.audit_entries(f"rollout:{rollout_id}", limit=50),
    }


def _weighted_p95(rows: Sequence[tuple[Any, ...]]) -> float | None:
    pairs = [(float(r[5]), int(r[2])) for r in rows if r[5] is not None and int(r[2]) > 0]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None


def latency_view(
    store: Store, state: c.RolloutState, baseline_window_s: float = 3600.0
) -> c.Latency:
    """Request-weighted p95 of the candidate (devices of this rollout, since it started) and of
    the baseline version (the most common baseline, over the fleet, from an hour before)."""
    if state.spec.max_latency_regression_pct is None:
        return c.Latency()
    row = store.rollout(state.id)
    created = float(row.created) if row else 0.0
    members = store.rollout_members(state.id)
    baselines = [int(b) for b in members.values() if b is not None]
    if not baselines:
        return c.Latency()
    baseline = max(set(baselines), key=baselines.count)
    cand = store.telemetry(
        state.spec.model, state.spec.version, since=created, devices=list(members)
    )
    base = store.telemetry(state.spec.model, baseline, since=created - baseline_window_s)
    return c.Latency(_weighted_p95(base), _weighted_p95(cand), len({r[0] for r in cand}))
