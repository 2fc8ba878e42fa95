"""The rollout status table: every (status, event) pair either moves as drawn or raises."""

from __future__ import annotations

import pytest
from edgeserve.fleet_server.rollout import lifecycle as lc

from edgeserve.errors import ConfigError, TransitionError


def test_operator_actions_per_status() -> None:
    assert lc.allowed_actions("running") == ("pause", "abort", "rollback")
    assert lc.allowed_actions("paused") == ("resume", "abort", "rollback")
    assert lc.allowed_actions("completed") == ("rollback",)
    assert lc.allowed_actions("aborted") == ("rollback",)
    assert lc.allowed_actions("rolled_back") == ()


def test_transitions() -> None:
    assert lc.next_status("running", "pause") == "paused"
    assert lc.next_status("paused", "resume") == "running"
    assert lc.next_status("running", "complete") == "completed"
    assert lc.next_status("completed", "rollback") == "rolled_back"


def test_every_status_has_the_error_transition() -> None:
    for status in lc.STATUSES:
        after = lc.next_status(status, lc.FAIL)
        assert after == ("paused" if status in lc.ACTIVE else status)


def test_illegal_transitions_raise() -> None:
    legal = set(lc.TRANSITIONS)
    for status in lc.STATUSES:
        for event in lc.EVENTS:
            if (status, event) not in legal:
                with pytest.raises(TransitionError):
                    lc.next_status(status, event)
    with pytest.raises(ConfigError):  # a TransitionError is the operator's mistake (400)
        lc.next_status("running", "explode")
