"""The rollout controller as a pure function: rollout state + device progress + now -> decisions.

No I/O here: :mod:`..engine` loads a :class:`Progress` from the store (the database counts the
devices by state and lists only those a decision may name), calls :func:`step`, and applies the
decisions (desired state, audit log). That keeps every rule below testable with plain data and
a chosen ``now``; :meth:`Progress.of` makes the same summary from a list of devices.

Rules:

- Devices matching the selector get a stable bucket ``hash(device, rollout)`` in [0, 100);
  phase ``p`` covers buckets ``< p``.
- A phase is *settled* when each of its devices is active or failed; it advances once it has
  been settled for ``soak_s`` seconds. The last phase completing completes the rollout.
- Gates, checked on every step: **failure** (failed / finished > ``max_failure_pct`` once at
  least ``min_devices`` devices finished), **latency** (candidate p95 over baseline p95 beyond
  ``max_latency_regression_pct``, once ``min_devices`` devices sent candidate telemetry) and
  **install timeout** (a device not active ``install_timeout_s`` after assignment has failed).
  A failed gate pauses the rollout and reverts every device it touched to its baseline.
- A phase's devices are assigned on the pass after the one that moved to it (the engine runs
  that pass at once), so that a pass never needs the devices of a later phase.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Assign",
    "Complete",
    "Decision",
    "DeviceProgress",
    "GateFailed",
    "Gates",
    "Latency",
    "MarkFailed",
    "NextPhase",
    "Progress",
    "Revert",
    "RolloutSpec",
    "RolloutState",
    "Settled",
    "bucket",
    "device_state",
    "step",
]

# Device states inside a rollout (not the agent's install states, which are folded into these).
PENDING, INSTALLING, ACTIVE, FAILED, REVERTED = (
    "pending",
    "installing",
    "active",
    "failed",
    "reverted",
)
DEVICE_STATES = (PENDING, INSTALLING, ACTIVE, FAILED, REVERTED)


def device_state(status: Mapping[str, Any], version: int) -> tuple[str, str] | None:
    """Fold an agent's model status into a rollout device state (None: no news for us)."""
    state = status.get("state")
    if status.get("active") == version and state == "ACTIVE":
        return ACTIVE, "active"
    if status.get("target") == version and state in ("FAILED", "REJECTED", "ROLLED_BACK"):
        why = status.get("reason_code") or status.get("error") or ""
        return FAILED, f"{state}: {why}"[:200]
    if status.get("target") == version:
        return INSTALLING, str(state)
    return None


def bucket(device: str, scope: str) -> float:
    """Stable bucket of ``device`` within ``scope`` (e.g. ``rollout:3``), in [0, 100).

    SHA-256 rather than ``hash()``: Python salts ``hash`` per process (PYTHONHASHSEED), and a
    bucket must be the same in every server replica and after a restart.
    """
    digest = hashlib.sha256(f"{scope}\x00{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


@dataclass(frozen=True)
class RolloutSpec:
    """What the operator asked for."""

    model: str
    version: int
    selector: Mapping[str, str] = field(default_factory=dict)
    phases: tuple[int, ...] = (100,)
    soak_s: float = 0.0
    max_failure_pct: float = 0.0
    min_devices: int = 1
    max_latency_regression_pct: float | None = None
    install_timeout_s: float = 600.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "model": self.model,
            "version": self.version,
            "selector": dict(self.selector),
            "phases": list(self.phases),
            "soak_s": self.soak_s,
            "max_failure_pct": self.max_failure_pct,
            "min_devices": self.min_devices,
            "max_latency_regression_pct": self.max_latency_regression_pct,
            "install_timeout_s": self.install_timeout_s,
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> RolloutSpec:
        """Inverse of :meth:`to_dict` (the API validates before calling this)."""
        return cls(
            model=obj["model"],
            version=int(obj["version"]),
            selector=dict(obj["selector"]),
            phases=tuple(int(p) for p in obj["phases"]),
            soak_s=float(obj["soak_s"]),
            max_failure_pct=float(obj["max_failure_pct"]),
            min_devices=int(obj["min_devices"]),
            max_latency_regression_pct=obj.get("max_latency_regression_pct"),
            install_timeout_s=float(obj["install_timeout_s"]),
        )


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout is. ``status``: running, paused, completed, aborted, rolled_back."""

    id: int
    spec: RolloutSpec
    status: str = "running"
    phase_index: int = 0
    phase_settled: float | None = None


@dataclass(frozen=True)
class DeviceProgress:
    """One matching device's progress in the rollout."""

    device: str
    bucket: float
    state: str = PENDING
    assigned: float | None = None


def _percent(spec: RolloutSpec, phase_index: int) -> int:
    return spec.phases[min(phase_index, len(spec.phases) - 1)]


@dataclass(frozen=True)
class Progress:
    """What :func:`step` needs of a rollout's devices, for the current phase.

    A pass over a 100,000-device rollout used to load every device; this holds counts and only
    the devices a decision may name.

    Attributes:
        counts: devices by state, every phase.
        unsettled: devices of the current phase neither active nor failed.
        pending: the current phase's pending devices (to assign).
        installing: installing devices that may have passed the install timeout (the loader
            may leave out those assigned too recently; :func:`step` checks each one).
    """

    counts: Mapping[str, int]
    unsettled: int
    pending: Sequence[DeviceProgress] = ()
    installing: Sequence[DeviceProgress] = ()

    @classmethod
    def of(cls, state: RolloutState, devices: Sequence[DeviceProgress]) -> Progress:
        """The summary of ``devices`` (every device of the rollout) at ``state``'s phase."""
        percent = _percent(state.spec, state.phase_index)
        counts = dict.fromkeys(DEVICE_STATES, 0)
        for d in devices:
            counts[d.state] += 1
        return cls(
            counts=counts,
            unsettled=sum(d.bucket < percent and d.state not in (ACTIVE, FAILED) for d in devices),
            pending=tuple(d for d in devices if d.bucket < percent and d.state == PENDING),
            installing=tuple(d for d in devices if d.state == INSTALLING),
        )


@dataclass(frozen=True)
class Latency:
    """p95 latency (ms) of the baseline and candidate versions, from telemetry."""

    baseline_p95_ms: float | None = None
    candidate_p95_ms: float | None = None
    candidate_devices: int = 0


@dataclass(frozen=True)
class Gates:
    """Gate values at this step, shown by ``rollout status``."""

    targeted: int
    active: int
    failed: int
    failure_pct: float
    latency_regression_pct: float | None
    phase_percent: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Assign:
    """Set the rollout's version as these devices' desired state."""

    devices: tuple[str, ...]


@dataclass(frozen=True)
class MarkFailed:
    """A device failed without saying so (install timeout)."""

    device: str
    reason: str


@dataclass(frozen=True)
class Settled:
    """Every device of the current phase finished at ``at``; the soak starts."""

    at: float


@dataclass(frozen=True)
class NextPhase:
    """Move to phase ``index``."""

    index: int
    reason: str


@dataclass(frozen=True)
class Complete:
    """The last phase soaked: the rollout is done."""

    reason: str


@dataclass(frozen=True)
class GateFailed:
    """A gate failed: pause the rollout (the devices are reverted by an accompanying Revert)."""

    gate: str
    reason: str


@dataclass(frozen=True)
class Revert:
    """Set every device the rollout touched (installing, active or failed, after the decisions
    before this one) back to its baseline version (operator-signed downgrade)."""

    reason: str


TOUCHED = (INSTALLING, ACTIVE, FAILED)  # the states a Revert reverts


Decision = Assign | MarkFailed | Settled | NextPhase | Complete | GateFailed | Revert


def _gates(spec: RolloutSpec, counts: Mapping[str, int], latency: Latency, percent: int) -> Gates:
    active = counts.get(ACTIVE, 0)
    failed = counts.get(FAILED, 0)
    finished = active + failed
    regression = None
    if latency.baseline_p95_ms and latency.candidate_p95_ms is not None:
        regression = (latency.candidate_p95_ms / latency.baseline_p95_ms - 1.0) * 100.0
    return Gates(
        targeted=sum(counts.get(s, 0) for s in TOUCHED),
        active=active,
        failed=failed,
        failure_pct=(100.0 * failed / finished) if finished else 0.0,
        latency_regression_pct=regression,
        phase_percent=percent,
    )


def step(
    state: RolloutState,
    progress: Progress,
    latency: Latency,
    now: float,
) -> tuple[list[Decision], Gates]:
    """Decide what a running rollout does next.

    Args:
        state: the rollout.
        progress: its devices at the current phase.
        latency: baseline and candidate p95 from telemetry.
        now: the current time (UNIX seconds); passed in so that tests choose it.

    Returns:
        The decisions, in the order they must be applied, and the gate values.
    """
    spec = state.spec
    percent = _percent(spec, state.phase_index)
    counts = dict.fromkeys(DEVICE_STATES, 0) | dict(progress.counts)
    decisions: list[Decision] = []
    if state.status != "running":
        return decisions, _gates(spec, counts, latency, percent)

    unsettled = progress.unsettled
    for d in progress.installing:  # install timeout gate
        if d.assigned is not None and now - d.assigned > spec.install_timeout_s:
            decisions.append(MarkFailed(d.device, f"install timeout ({spec.install_timeout_s:g}s)"))
            counts[INSTALLING] -= 1
            counts[FAILED] += 1
            unsettled -= d.bucket < percent
    fresh = tuple(d.device for d in progress.pending)
    if fresh:
        decisions.append(Assign(fresh))
        counts[PENDING] -= len(fresh)
        counts[INSTALLING] += len(fresh)

    gates = _gates(spec, counts, latency, percent)
    finished = gates.active + gates.failed
    failed_gate: GateFailed | None = None
    if finished >= spec.min_devices and gates.failure_pct > spec.max_failure_pct:
        failed_gate = GateFailed(
            "failure",
            f"{gates.failed}/{finished} devices failed ({gates.failure_pct:.1f}% > "
            f"{spec.max_failure_pct:g}%)",
        )
    elif (
        spec.max_latency_regression_pct is not None
        and gates.latency_regression_pct is not None
        and latency.candidate_devices >= spec.min_devices
        and gates.latency_regression_pct > spec.max_latency_regression_pct
    ):
        failed_gate = GateFailed(
            "latency",
            f"p95 {latency.candidate_p95_ms:.2f} ms vs baseline {latency.baseline_p95_ms:.2f} ms "
            f"(+{gates.latency_regression_pct:.1f}% > {spec.max_latency_regression_pct:g}%)",
        )
    if failed_gate is not None:
        return [*decisions, failed_gate, Revert(f"gate {failed_gate.gate} failed")], gates

    if unsettled > 0:
        return decisions, gates
    settled = state.phase_settled
    if settled is None:
        settled = now
        decisions.append(Settled(now))
    if now - settled < spec.soak_s:
        return decisions, gates
    if state.phase_index + 1 >= len(spec.phases):
        decisions.append(Complete(f"{gates.active} devices active, {gates.failed} failed"))
        return decisions, gates
    nxt = state.phase_index + 1
    decisions.append(
        NextPhase(nxt, f"phase {percent}% settled, soaked {now - settled:.0f}s, gates passed")
    )
    return decisions, gates
