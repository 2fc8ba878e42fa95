"""Agent fixtures: stores with installed bundles, running agent processes (helpers that tests
import live in ``tests/support/agent.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from edgeserve.agent.store import ModelStore
from support.agent import AgentProcess, start_agent
from support.models import make_linear_bundle


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A store with linear v1 (active) installed."""
    state = tmp_path / "state"
    ModelStore(state).install(make_linear_bundle(tmp_path / "b1", version=1).path)
    return state


@pytest.fixture
def running_agent(state_dir: Path) -> Iterator[AgentProcess]:
    """An agent process serving linear v1 with default settings."""
    agent = start_agent(state_dir)
    yield agent
    agent.stop()
