"""A rollout's status as a state table: ``TRANSITIONS[(status, event)] -> new status``.

::

    running  --pause-->     paused        paused   --resume-->   running
    running  --complete-->  completed     (last phase soaked)
    running  --fail-->      paused        (a gate failed: the error transition)
    running | paused               --abort-->     aborted
    running | paused | completed | aborted  --rollback-->  rolled_back

``fail`` is the error transition and exists from every status: an active rollout pauses, a
finished one stays as it is. Any other ``(status, event)`` raises :class:`TransitionError`.
"""

from __future__ import annotations

from edgeserve.errors import TransitionError

__all__ = [
    "ACTIONS",
    "ACTIVE",
    "EVENTS",
    "STATUSES",
    "TRANSITIONS",
    "allowed_actions",
    "next_status",
]

RUNNING, PAUSED, COMPLETED, ABORTED, ROLLED_BACK = (
    "running",
    "paused",
    "completed",
    "aborted",
    "rolled_back",
)
STATUSES = (RUNNING, PAUSED, COMPLETED, ABORTED, ROLLED_BACK)
ACTIVE = (RUNNING, PAUSED)

# what an operator may ask for (the console and CLI offer these), then the controller's events
ACTIONS = ("pause", "resume", "abort", "rollback")
COMPLETE, FAIL = "complete", "fail"
EVENTS = (*ACTIONS, COMPLETE, FAIL)

TRANSITIONS: dict[tuple[str, str], str] = {
    (RUNNING, "pause"): PAUSED,
    (PAUSED, "resume"): RUNNING,
    (RUNNING, "abort"): ABORTED,
    (PAUSED, "abort"): ABORTED,
    (RUNNING, "rollback"): ROLLED_BACK,
    (PAUSED, "rollback"): ROLLED_BACK,
    (COMPLETED, "rollback"): ROLLED_BACK,
    (ABORTED, "rollback"): ROLLED_BACK,
    (RUNNING, COMPLETE): COMPLETED,
    # the error transition, from every status
    (RUNNING, FAIL): PAUSED,
    (PAUSED, FAIL): PAUSED,
    (COMPLETED, FAIL): COMPLETED,
    (ABORTED, FAIL): ABORTED,
    (ROLLED_BACK, FAIL): ROLLED_BACK,
}


def next_status(status: str, event: str) -> str:
    """The status after ``event``.

    Raises:
        TransitionError: ``event`` is not allowed in ``status`` (or either is unknown).
    """
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise TransitionError(f"a {status} rollout does not take {event!r}") from None


def allowed_actions(status: str) -> tuple[str, ...]:
    """The operator actions a rollout in ``status`` accepts, in :data:`ACTIONS` order."""
    return tuple(a for a in ACTIONS if (status, a) in TRANSITIONS)
