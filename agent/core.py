"""Alias kept for the documented import path ``edgeserve.agent.core.Agent``; the agent core
lives in :mod:`edgeserve.agent.serving.core`."""

from __future__ import annotations

from edgeserve.agent.serving.core import Agent

__all__ = ["Agent"]
