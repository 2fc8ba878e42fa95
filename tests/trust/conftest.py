"""Fixtures for trust tests: the session key set and a fixed reference time."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from support.fleet_keys import fleet_keys_fixture  # noqa: F401  (fixture "fleet_keys")


@pytest.fixture
def now() -> datetime:
    """A fixed reference time well inside the keyring's validity (keys are made 'now')."""
    return datetime.now(timezone.utc).replace(microsecond=0)
