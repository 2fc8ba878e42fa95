"""Install outcomes that must survive an agent restart (``<state>/fleet/outcomes.json``).

Two entries per model, keyed by the desired ``seq`` and version they belong to:

- WARMING, written just before a version with a predecessor is activated: if the agent dies
  between the switch and the health check, the restarted agent finds the new version active
  and must not take it as healthy; :class:`DeviceSync` runs the check then (and rolls back to
  the recorded previous version on failure).
- ROLLED_BACK: a version rolled back after failing its health check is not activated again
  when the agent restarts with the same desired state (``systemd`` restarting a crashing agent
  would otherwise serve the bad version for a moment on every start); the device reports the
  saved status until a new desired state arrives.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgeserve.protocol import DesiredState, InstallState, ModelStatus, ProtocolError
from edgeserve.trust import write_atomic

__all__ = ["current_outcomes", "load_outcomes", "record_outcome", "save_outcome"]

log = logging.getLogger(__name__)
OUTCOMES_NAME = "outcomes.json"


def load_outcomes(fleet_dir: Path) -> dict[str, tuple[int, int, ModelStatus]]:
    """Saved outcomes: model -> ``(seq, version, status)``. An unreadable file is ignored
    (logged): the worst case is one more install attempt, never a wrong version served."""
    path = fleet_dir / OUTCOMES_NAME
    try:
        raw: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("fleet sync: ignoring unreadable %s: %s", path, exc)
        return {}
    out: dict[str, tuple[int, int, ModelStatus]] = {}
    if not isinstance(raw, dict):
        return out
    for name, entry in raw.items():
        try:
            seq, version = entry["seq"], entry["version"]
            if not isinstance(seq, int) or not isinstance(version, int):
                raise ProtocolError("seq and version must be integers")
            out[name] = (seq, version, ModelStatus.from_dict(entry["status"]))
        except (KeyError, TypeError, ProtocolError) as exc:
            log.warning("fleet sync: ignoring saved outcome of %s: %s", name, exc)
    return out


def save_outcome(fleet_dir: Path, name: str, seq: int, version: int, status: ModelStatus) -> None:
    """Record ``status`` as the outcome of installing ``name`` v``version`` for desired
    ``seq`` (atomically; entries of other models are kept).

    Raises:
        StorageError: the file cannot be written.
    """
    current = {
        n: {"seq": s, "version": v, "status": st.to_dict()}
        for n, (s, v, st) in load_outcomes(fleet_dir).items()
    }
    current[name] = {"seq": seq, "version": version, "status": status.to_dict()}
    fleet_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(fleet_dir / OUTCOMES_NAME, json.dumps(current, sort_keys=True).encode())


def record_outcome(fleet_dir: Path, name: str, seq: int, version: int, status: ModelStatus) -> None:
    """:func:`save_outcome`, logging instead of raising: losing the record costs at most one
    more install attempt, which must not fail the install itself."""
    from edgeserve.errors import EdgeServeError

    try:
        save_outcome(fleet_dir, name, seq, version, status)
    except EdgeServeError as exc:
        log.error("fleet sync: outcome of %s v%s not saved: %s", name, version, exc)


def current_outcomes(
    fleet_dir: Path, desired: DesiredState
) -> tuple[dict[str, ModelStatus], dict[str, tuple[int, int, int]]]:
    """Saved outcomes that belong to ``desired`` (same seq and target version).

    Returns:
        ``(rolled back: model -> saved status, activations never checked: model ->
        (seq, version, previous version))``.
    """
    rolled_back: dict[str, ModelStatus] = {}
    unchecked: dict[str, tuple[int, int, int]] = {}
    for name, (seq, version, status) in load_outcomes(fleet_dir).items():
        target = desired.models.get(name)
        if seq != desired.seq or target is None or target.version != version:
            continue
        if status.state is InstallState.WARMING and status.active is not None:
            unchecked[name] = (seq, version, status.active)
        elif status.state is InstallState.ROLLED_BACK:
            rolled_back[name] = status
    return rolled_back, unchecked
