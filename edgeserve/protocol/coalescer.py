"""Which install-status changes are worth a message to the server (the report budget)."""

from __future__ import annotations

from edgeserve.protocol.reports import ModelStatus

__all__ = ["ReportCoalescer"]


class ReportCoalescer:
    """Decides which status changes are worth a message (budget: <= 6 messages per device per
    rollout, desired included).

    Rules: a terminal state is reported when it differs from the last reported status of that
    model (the free-text ``error`` aside, so retries failing for the same reason stay
    silent); an in-progress state (DOWNLOADING ... WARMING) is reported once per target
    version, so the server learns the device started.
    """

    def __init__(self) -> None:
        self._last: dict[str, ModelStatus] = {}
        self._progress_sent: dict[str, int | None] = {}

    def should_report(self, name: str, status: ModelStatus) -> bool:
        """Whether ``status`` of model ``name`` deserves a report now; records it if so."""
        last = self._last.get(name)
        if status.state.terminal:
            if last is not None and _key(last) == _key(status):
                return False
        else:
            if self._progress_sent.get(name, -1) == status.target:
                return False
            self._progress_sent[name] = status.target
        self._last[name] = status
        return True

    def forget(self) -> None:
        """After a reconnect: report everything afresh."""
        self._last.clear()
        self._progress_sent.clear()


def _key(status: ModelStatus) -> tuple[object, ...]:
    return (status.state, status.active, status.target, status.previous, status.reason_code)
