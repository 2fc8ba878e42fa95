"""The rows the store hands out, and the JSON encoding of its TEXT columns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DeviceRow", "ExperimentRow", "RolloutRow", "Row", "Target", "to_json"]

Row = tuple[Any, ...]


def to_json(value: Any) -> str:
    """Canonical JSON for a TEXT column (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Target:
    """One model a device should run (a ``device_targets`` row)."""

    model: str
    version: int
    allow_downgrade: bool = False
    split: Mapping[str, Any] | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class DeviceRow:
    """A device as the store knows it."""

    id: str
    tags: Mapping[str, str]
    presence: str
    reported: Mapping[str, Any]
    reported_at: float | None
    desired_seq: int
    created: float


@dataclass(frozen=True)
class RolloutRow:
    """A ``rollouts`` row; ``spec`` and ``gates`` decoded."""

    id: int
    model: str
    version: int
    spec: Mapping[str, Any]
    status: str
    phase_index: int
    phase_started: float | None
    reason: str
    gates: Mapping[str, Any]
    created: float
    updated: float

    @property
    def phase_percent(self) -> int:
        """The percent of the fleet the current phase covers."""
        phases = self.spec["phases"]
        return int(phases[min(self.phase_index, len(phases) - 1)])


@dataclass(frozen=True)
class ExperimentRow:
    """An ``experiments`` row; ``spec`` decoded."""

    id: int
    model: str
    spec: Mapping[str, Any]
    status: str
    created: float
    ended: float | None
    rollout: int | None


def failure(row: Row) -> dict[str, Any]:
    """A ``device_failures`` row from ``model`` on (model, version, state, reason_code, error,
    phase, ts) as the API shows it."""
    model, version, state, reason_code, error, phase, ts = row
    return {
        "model": model,
        "version": int(version),
        "state": state,
        "reason_code": reason_code,
        "error": error,
        "phase": int(phase),
        "ts": ts,
    }
