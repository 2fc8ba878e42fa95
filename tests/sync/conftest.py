"""Fixtures for fleet sync tests: the session key set (see tests/support/fleet_keys.py)."""

from __future__ import annotations

from support.fleet_keys import fleet_keys  # noqa: F401  (re-exported fixture)
