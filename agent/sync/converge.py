"""Converging a device on its desired state: each model target in turn, until it is ACTIVE or
out of attempts.

:class:`Converger` decides, per model, whether there is anything to do (the target already
serves, or finished for this ``seq``), runs one install through the
:class:`~.install_pipeline.InstallPipeline` when there is, records outcomes that must survive
a restart (:mod:`.state`) and reports every status change (:class:`~.reports.Reporter`).
Downloads and disk errors are retried with exponential backoff up to ``install_attempts``;
other failures (a rejected signature, a failed health check) are final for this ``seq``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from edgeserve.agent.sync.agent_adapter import Installer
from edgeserve.agent.sync.install_pipeline import InstallPipeline, Outcome
from edgeserve.agent.sync.reports import Reporter
from edgeserve.agent.sync.state import current_outcomes, record_outcome

from edgeserve.protocol import DesiredState, InstallMachine, InstallState, ModelStatus, ModelTarget
from edgeserve.trust import Keyring

__all__ = ["Converger"]

S = InstallState
# failure reason codes worth another attempt (the network or the disk, not the release)
_RETRYABLE = frozenset({"download", "storage"})


class Converger:
    """Per-model install progress of one device; used from its worker thread only.

    Args:
        installer: the store and runtime.
        pipeline: runs one install.
        reporter: where statuses go.
        fleet_dir: ``<state>/fleet`` (install outcomes).
        install_attempts: attempts per model and desired seq.
        retry_backoff_s: delay before the first retry (doubled for each next one).
        retry: asks the worker to converge again (called from a timer thread).
        stopped: set when the device is stopping.
        clock: the reference time for expiry checks.
    """

    def __init__(
        self,
        installer: Installer,
        pipeline: InstallPipeline,
        reporter: Reporter,
        fleet_dir: Path,
        *,
        install_attempts: int,
        retry_backoff_s: float,
        retry: Callable[[], None],
        stopped: threading.Event,
        clock: Callable[[], datetime],
    ) -> None:
        self.installer = installer
        self._pipeline = pipeline
        self._reporter = reporter
        self._dir = fleet_dir
        self._install_attempts = install_attempts
        self._retry_backoff_s = retry_backoff_s
        self._retry = retry
        self._stopped = stopped
        self._clock = clock
        self._machines: dict[str, InstallMachine] = {}
        self._attempts: dict[str, int] = {}
        self._done: dict[str, tuple[int, int]] = {}  # model -> (seq, version) finished
        self._prev_versions: dict[str, int | None] = {}
        self._unchecked: dict[str, tuple[int, int, int]] = {}  # model -> (seq, version, previous)
        self._timers: list[threading.Timer] = []

    def restore(self, desired: DesiredState) -> None:
        """Rolled-back targets of the current desired state stay done after a restart; an
        activation the agent died in is health-checked first (:mod:`.state`)."""
        rolled_back, self._unchecked = current_outcomes(self._dir, desired)
        for name, status in rolled_back.items():
            self._done[name] = (desired.seq, desired.models[name].version)
            self._machines[name] = InstallMachine(S.ROLLED_BACK)
            self._reporter.restore(
                name, replace(status, active=self.installer.active_version(name))
            )

    def new_desired(self) -> None:
        """A new desired state was accepted: every model gets its attempts again."""
        self._attempts.clear()

    def converge_all(self, desired: DesiredState, keyring: Keyring | None) -> None:
        """One pass over every model target of ``desired``."""
        for name, target in desired.models.items():
            if self._stopped.is_set():
                return
            self._converge(desired.seq, name, target, keyring)

    def cancel(self) -> None:
        """Cancel pending retries (the device is stopping)."""
        for timer in self._timers:
            timer.cancel()

    def _converge(self, seq: int, name: str, target: ModelTarget, keyring: Keyring | None) -> None:
        if self._done.get(name) == (seq, target.version):
            return
        if self._attempts.get(name, 0) >= self._install_attempts:
            return
        active = self.installer.active_version(name)
        machine = self._machines.setdefault(name, InstallMachine())
        if active == target.version and self._pipeline.split_ok(name, target):
            unchecked = self._unchecked.pop(name, None)
            if unchecked is not None and unchecked[:2] == (seq, target.version):
                # the agent died between activating this version and its health check
                machine = self._machines[name] = InstallMachine(S.WARMING)
                outcome = self._pipeline.recheck(name, target, unchecked[2], machine)
                self._finish(seq, name, target, unchecked[2], outcome)
                return
            if machine.state is not S.ACTIVE:
                self._machines[name] = InstallMachine(S.ACTIVE)
            if target.allow_downgrade:
                # a revert to the version that serves (it rolled back by itself): the newer
                # versions left in the store failed or were rejected; prune them by policy
                installed = self.installer.installed_versions(name)
                self._pipeline.prune(name, target, {v for v in installed if v <= active})
            self._done[name] = (seq, target.version)
            self._set(name, ModelStatus(S.ACTIVE, active, target.version, self._prev(name)))
            return
        self._attempts[name] = self._attempts.get(name, 0) + 1
        self._set(name, ModelStatus(S.DOWNLOADING, active, target.version, self._prev(name)))
        self._pipeline.on_activating = lambda n, v, prev: record_outcome(
            self._dir, n, seq, v, ModelStatus(S.WARMING, prev, v)
        )
        outcome = self._pipeline.run(
            name, target, machine, active=active, keyring=keyring, now=self._clock()
        )
        self._finish(seq, name, target, active, outcome)

    def _finish(
        self, seq: int, name: str, target: ModelTarget, active: int | None, outcome: Outcome
    ) -> None:
        state, error, code = outcome
        if state is S.ACTIVE:
            self._prev_versions[name] = active
        now_active = self.installer.active_version(name)
        status = ModelStatus(state, now_active, target.version, active, error, code)
        if state is S.ROLLED_BACK:  # never activate the bad version again for this seq
            record_outcome(self._dir, name, seq, target.version, status)
        self._set(name, status)
        if state is S.FAILED and self._attempts[name] < self._install_attempts:
            if code in _RETRYABLE:
                self._retry_later(self._attempts[name])
            else:
                self._attempts[name] = self._install_attempts
        elif state is not S.FAILED:
            self._done[name] = (seq, target.version)

    def _set(self, name: str, status: ModelStatus) -> None:
        self._reporter.set(name, status)

    def _prev(self, name: str) -> int | None:
        return self._prev_versions.get(name)

    def _retry_later(self, attempt: int) -> None:
        delay = self._retry_backoff_s * 2 ** (attempt - 1)
        timer = threading.Timer(delay, self._retry)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()
