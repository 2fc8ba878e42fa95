"""Staged rollouts: a release goes to a growing share of the matching devices, phase by
phase, guarded by gates, and is reverted to each device's baseline when a gate fails or the
operator rolls it back.

- ``controller``: the sans-I/O rule book, rollout state + device progress + now ->
  decisions (:func:`~.controller.step`); no database, no MQTT.
- ``lifecycle``: the rollout's status as a ``(status, event)`` state table.
- ``start``: create a rollout and enroll the devices its selector matches; load a rollout's
  state and progress for the controller.
- ``decisions``: persist the controller's decisions (assign, fail, next phase, complete,
  pause on a failed gate, revert).
- ``reports``: fold devices' reported install states into their progress.
- ``operator``: pause, resume, abort, roll back.
- ``views``: what ``rollout status`` shows, and the latency the gate judges.

The functions that change devices' targets return the devices whose desired state changed;
the engine (``fleet_server/engine.py``) signs and publishes those over MQTT.
"""

from __future__ import annotations

from .decisions import apply_decisions
from .lifecycle import ACTIONS, allowed_actions
from .operator import operator_action
from .reports import apply_reports
from .start import create_rollout, load_rollout, matches, progress, running_rollouts

__all__ = [
    "ACTIONS",
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
