"""What fleet sync drives on a device: the :class:`Installer` interface and its real
implementation over the agent (:class:`AgentInstaller`). Simulations use
:class:`edgeserve.agent.sync.simulator.SimulatedInstaller` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

__all__ = ["AgentInstaller", "Installer", "TelemetrySource"]


class Installer(Protocol):
    """Installs, activates and checks model versions for :class:`~.device.DeviceSync`.

    ``activate`` must leave the previous version serving when it raises.
    """

    def active_version(self, name: str) -> int | None:
        """The version serving unversioned requests, or None."""

    def installed_versions(self, name: str) -> list[int]:
        """Versions present in the store."""

    def install(self, bundle_dir: Path) -> None:
        """Add a verified bundle directory to the store without activating it."""

    def activate(self, name: str, version: int) -> None:
        """Hot-swap to ``version`` (load + warm up first); raise and keep the old on failure."""

    def health_check(self, name: str, version: int) -> None:
        """Run the bundle's sample inputs; raise when outputs are missing or not finite."""

    def set_split(self, name: str, a: int, b: int, weight_b: int, label: str | None = None) -> None:
        """On-device A/B: ``weight_b`` percent (0-100) of requests for ``name`` go to ``b``;
        ``label`` (the experiment) marks the telemetry windows opened from now on."""

    def clear_split(self, name: str) -> None:
        """Remove the A/B split of ``name``."""

    def current_split(self, name: str) -> tuple[int, int, int] | None:
        """``(a, b, weight_b percent)`` of the current split, or None."""

    def prune(self, name: str, keep: set[int]) -> list[int]:
        """Delete installed versions of ``name`` not in ``keep`` (nor otherwise in use);
        return the versions removed."""


class TelemetrySource(Protocol):
    """The agent's :class:`~edgeserve.agent.serving.telemetry.TelemetryBuffer` as sync sees it."""

    def pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Oldest unacknowledged records."""

    def ack(self, up_to_id: int) -> None:
        """Forget records up to ``up_to_id`` (the broker has them)."""

    @property
    def dropped(self) -> int:
        """Records lost to the buffer bound."""


class AgentInstaller:
    """:class:`Installer` over the running agent (store + hot swap on its event loop).

    Args:
        agent: an ``edgeserve.agent.serving.core.Agent`` that has been started.
        timeout_s: the longest activation or health check allowed.
    """

    def __init__(self, agent: Any, timeout_s: float = 120.0) -> None:
        self.agent = agent
        self.timeout_s = timeout_s

    def active_version(self, name: str) -> int | None:
        """The serving version of ``name``, or None."""
        return self.agent.store.active_version(name)

    def installed_versions(self, name: str) -> list[int]:
        """Versions of ``name`` in the store, ascending."""
        return list(self.agent.store.versions(name))

    def install(self, bundle_dir: Path) -> None:
        """Add a verified bundle directory to the store, not active."""
        self.agent.store.install(bundle_dir, activate=False)

    def activate(self, name: str, version: int) -> None:
        """Hot-swap to ``version``; on failure the previous version keeps serving."""
        self.agent.run_threadsafe(self.agent.activate(name, version), self.timeout_s)

    def health_check(self, name: str, version: int) -> None:
        """Run the version's sample inputs; raise ModelError when they fail."""
        self.agent.run_threadsafe(self.agent.health_check(name, version), self.timeout_s)

    def set_split(self, name: str, a: int, b: int, weight_b: int, label: str | None = None) -> None:
        """Send ``weight_b`` percent of ``name``'s requests to ``b`` (windows cut, labelled)."""
        coro = self.agent.set_split(name, a, b, weight_b / 100.0, label=label)
        self.agent.run_threadsafe(coro, self.timeout_s)

    def clear_split(self, name: str) -> None:
        """Remove the A/B split of ``name``."""
        self.agent.run_threadsafe(self.agent.clear_split(name), self.timeout_s)

    def current_split(self, name: str) -> tuple[int, int, int] | None:
        """``(a, b, weight_b percent)`` of ``name``'s split, or None."""
        split = self.agent.splits().get(name)
        if split is None:
            return None
        return (split.a, split.b, round(split.weight_b * 100))

    def prune(self, name: str, keep: set[int]) -> list[int]:
        """Remove versions not in ``keep``, the active one or in use; return them."""
        store = self.agent.store
        in_use = set(keep) | set(store.labels(name).values())
        for split in self.agent.splits().values():
            if split.model == name:
                in_use |= {split.a, split.b}
        active = store.active_version(name)
        removed = []
        for version in store.versions(name):
            if version not in in_use and version != active:
                store.remove(name, version)
                removed.append(version)
        return removed
