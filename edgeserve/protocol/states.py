"""The device install state machine: one transition table keyed by (state, event), with an
error transition from every state. Part of :mod:`edgeserve.protocol`, which re-exports it.

::

    IDLE -START-> DOWNLOADING -DOWNLOADED-> VERIFYING -VERIFIED-> STAGED -STORED-> WARMING
    WARMING -HEALTHY-> ACTIVE        WARMING -ROLL_BACK-> ROLLED_BACK
    any state -ERROR-> FAILED (retryable)      any state -REJECT-> REJECTED (not retryable)
    a terminal state (IDLE, ACTIVE, FAILED, REJECTED, ROLLED_BACK) -START-> DOWNLOADING

The event picks the target state; an error has a transition from every state, so whatever
step fails, and whatever raised, the install ends in FAILED or REJECTED with its reason, never
in an exception from the machine itself. Any other (state, event) pair raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

from edgeserve.protocol.topics import ProtocolError

__all__ = [
    "TRANSITIONS",
    "IllegalTransitionError",
    "InstallEvent",
    "InstallMachine",
    "InstallState",
]


class IllegalTransitionError(ProtocolError):
    """An install state change the transition table does not allow."""


class InstallState(str, Enum):
    """Where one model's install stands on a device."""

    IDLE = "IDLE"
    DOWNLOADING = "DOWNLOADING"
    VERIFYING = "VERIFYING"
    STAGED = "STAGED"
    WARMING = "WARMING"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"  # retryable: network, disk, warm-up; the old version keeps serving
    REJECTED = "REJECTED"  # not retryable: a trust check failed; waits for a new desired state
    ROLLED_BACK = "ROLLED_BACK"  # activated, failed its health check, previous version restored

    @property
    def terminal(self) -> bool:
        """True for states an install ends in (a new target may start from them)."""
        return self in _TERMINAL


class InstallEvent(str, Enum):
    """What happened to an install; with the current state it picks the next one."""

    START = "START"  # a new target: fetch it
    DOWNLOADED = "DOWNLOADED"  # releases checked, artifacts fetched and unpacked
    VERIFIED = "VERIFIED"  # every file matches the signed manifest
    STORED = "STORED"  # in the store, not yet active
    HEALTHY = "HEALTHY"  # activated and passed its health check
    ROLL_BACK = "ROLL_BACK"  # activated, failed its health check, previous version restored
    ERROR = "ERROR"  # a retryable failure (network, disk, activation, warm-up)
    REJECT = "REJECT"  # not retryable: a trust or bundle check failed


_S = InstallState
_E = InstallEvent
_TERMINAL: Final = frozenset({_S.IDLE, _S.ACTIVE, _S.FAILED, _S.REJECTED, _S.ROLLED_BACK})
# The one transition table: (state, event) -> next state.
TRANSITIONS: Final[Mapping[tuple[InstallState, InstallEvent], InstallState]] = {
    **{(state, _E.START): _S.DOWNLOADING for state in _TERMINAL},
    (_S.DOWNLOADING, _E.DOWNLOADED): _S.VERIFYING,
    (_S.VERIFYING, _E.VERIFIED): _S.STAGED,
    (_S.STAGED, _E.STORED): _S.WARMING,
    (_S.WARMING, _E.HEALTHY): _S.ACTIVE,
    (_S.WARMING, _E.ROLL_BACK): _S.ROLLED_BACK,
    # errors, from every state
    **{(state, _E.ERROR): _S.FAILED for state in _S},
    **{(state, _E.REJECT): _S.REJECTED for state in _S},
}


class InstallMachine:
    """One model's install state; :meth:`handle` follows :data:`TRANSITIONS`."""

    def __init__(self, state: InstallState = InstallState.IDLE) -> None:
        self.state = state

    def handle(self, event: InstallEvent) -> InstallState:
        """Apply ``event``; returns the new state.

        Raises:
            IllegalTransitionError: the table has no ``(state, event)`` entry.
        """
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise IllegalTransitionError(f"install state {self.state.value} on {event.value}")
        self.state = new
        return new
