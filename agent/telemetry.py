"""Alias kept for the documented import path ``edgeserve.agent.telemetry.TelemetryBuffer``;
the buffer lives in :mod:`edgeserve.agent.serving.telemetry`."""

from __future__ import annotations

from edgeserve.agent.serving.telemetry import TelemetryBuffer

__all__ = ["TelemetryBuffer"]
