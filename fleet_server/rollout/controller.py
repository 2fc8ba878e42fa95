"""The rollout controller as a pure function: rollout state + device progress + now -> decisions.

No I/O here: :mod:`..engine` loads a snapshot from the store, calls
:func:`step`, and applies the decisions (desired state, audit log). That keeps every rule below
testable with plain data and a chosen ``now``.

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
    """Set these devices back to their baseline version (operator-signed downgrade)."""

    devices: tuple[str, ...]
    reason: str


Decision = Assign | MarkFailed | Settled | NextPhase | Complete | GateFailed | Revert


def _in_phase(devices: Sequence[DeviceProgress], percent: int) -> list[DeviceProgress]:
    return [d for d in devices if d.bucket < percent]


def _gates(spec: RolloutSpec, devices: Mapping[str, str], latency: Latency, percent: int) -> Gates:
    targeted = [s for s in devices.values() if s not in (PENDING, REVERTED)]
    active = sum(s == ACTIVE for s in targeted)
    failed = sum(s == FAILED for s in targeted)
    finished = active + failed
    regression = None
    if latency.baseline_p95_ms and latency.candidate_p95_ms is not None:
        regression = (latency.candidate_p95_ms / latency.baseline_p95_ms - 1.0) * 100.0
    return Gates(
        targeted=len(targeted),
        active=active,
        failed=failed,
        failure_pct=(100.0 * failed / finished) if finished else 0.0,
        latency_regression_pct=regression,
        phase_percent=percent,
    )


def step(
    state: RolloutState,
    devices: Sequence[DeviceProgress],
    latency: Latency,
    now: float,
) -> tuple[list[Decision], Gates]:
    """Decide what a running rollout does next.

    Args:
        state: the rollout.
        devices: every device matching the selector, with its progress.
        latency: baseline and candidate p95 from telemetry.
        now: the current time (UNIX seconds); passed in so that tests choose it.

    Returns:
        The decisions, in the order they must be applied, and the gate values.
    """
    spec = state.spec
    percent = spec.phases[min(state.phase_index, len(spec.phases) - 1)]
    current = {d.device: d.state for d in devices}
    decisions: list[Decision] = []
    if state.status != "running":
        return decisions, _gates(spec, current, latency, percent)

    for d in devices:  # install timeout gate
        if (
            d.state == INSTALLING
            and d.assigned is not None
            and now - d.assigned > spec.install_timeout_s
        ):
            decisions.append(MarkFailed(d.device, f"install timeout ({spec.install_timeout_s:g}s)"))
            current[d.device] = FAILED
    fresh = tuple(d.device for d in _in_phase(devices, percent) if d.state == PENDING)
    if fresh:
        decisions.append(Assign(fresh))
        current.update(dict.fromkeys(fresh, INSTALLING))

    gates = _gates(spec, current, latency, percent)
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
        touched = tuple(d for d, s in current.items() if s in (INSTALLING, ACTIVE, FAILED))
        return [*decisions, failed_gate, Revert(touched, f"gate {failed_gate.gate} failed")], gates

    phase_devices = [current[d.device] for d in _in_phase(devices, percent)]
    if any(s not in (ACTIVE, FAILED) for s in phase_devices):
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
    more = tuple(
        d.device for d in _in_phase(devices, spec.phases[nxt]) if current[d.device] == PENDING
    )
    if more:
        decisions.append(Assign(more))
    return decisions, gates
