"""Shared fixtures: small real models and bundles made on disk, a real Mosquitto broker.

Area-specific fixtures live in ``tests/<area>/conftest.py``; helpers that tests import live in
``tests/support/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.broker import Mosquitto
from support.models import make_linear_bundle

from edgeserve.bundle import Bundle


@pytest.fixture
def linear_bundle(tmp_path: Path) -> Bundle:
    """A small valid ONNX bundle in a temp directory."""
    return make_linear_bundle(tmp_path / "bundle")


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real anonymous Mosquitto broker on a free port, stopped after the test."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()
