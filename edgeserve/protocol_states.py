"""The device install state machine: one transition table (after h11's ``_state.py``).
Part of :mod:`edgeserve.protocol`, which re-exports everything.

::

    IDLE -> DOWNLOADING -> VERIFYING -> STAGED -> WARMING -> ACTIVE
                 |             |           |         |-> FAILED | ROLLED_BACK
                 +-> FAILED | REJECTED     +-> FAILED
    any terminal state (IDLE, ACTIVE, FAILED, REJECTED, ROLLED_BACK) -> DOWNLOADING (new target)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

from edgeserve.protocol_topics import ProtocolError

__all__ = ["TRANSITIONS", "IllegalTransitionError", "InstallMachine", "InstallState"]


class IllegalTransitionError(ProtocolError):
    """An install state change the transition table does not allow."""


class InstallState(str, Enum):
    """Where one model's install stands on a device (DESIGN.md, Fleet sync)."""

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


_S = InstallState
_TERMINAL: Final = frozenset({_S.IDLE, _S.ACTIVE, _S.FAILED, _S.REJECTED, _S.ROLLED_BACK})
# The one transition table (after h11/_state.py). A new target starts from any terminal state.
TRANSITIONS: Final[Mapping[InstallState, frozenset[InstallState]]] = {
    _S.IDLE: frozenset({_S.DOWNLOADING}),
    _S.DOWNLOADING: frozenset({_S.VERIFYING, _S.FAILED, _S.REJECTED}),
    _S.VERIFYING: frozenset({_S.STAGED, _S.FAILED, _S.REJECTED}),
    _S.STAGED: frozenset({_S.WARMING, _S.FAILED}),
    _S.WARMING: frozenset({_S.ACTIVE, _S.FAILED, _S.ROLLED_BACK}),
    _S.ACTIVE: frozenset({_S.DOWNLOADING}),
    _S.FAILED: frozenset({_S.DOWNLOADING}),
    _S.REJECTED: frozenset({_S.DOWNLOADING}),
    _S.ROLLED_BACK: frozenset({_S.DOWNLOADING}),
}


class InstallMachine:
    """One model's install state; :meth:`advance` enforces :data:`TRANSITIONS`."""

    def __init__(self, state: InstallState = InstallState.IDLE) -> None:
        self.state = state

    def advance(self, new: InstallState) -> InstallState:
        """Move to ``new``.

        Raises:
            IllegalTransitionError: the table does not allow ``state -> new``.
        """
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransitionError(f"install state {self.state.value} -> {new.value}")
        self.state = new
        return new
