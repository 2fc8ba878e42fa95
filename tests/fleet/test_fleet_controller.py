"""The rollout controller as a pure function: chosen devices, chosen ``now``, exact decisions."""

from __future__ import annotations

import pytest
from edgeserve.fleet_server.rollout import controller as c


def spec(**kw: object) -> c.RolloutSpec:
    base: dict[str, object] = {
        "model": "digits",
        "version": 4,
        "phases": (10, 50, 100),
        "soak_s": 60.0,
        "max_failure_pct": 5.0,
        "min_devices": 3,
        "install_timeout_s": 300.0,
    }
    base.update(kw)
    return c.RolloutSpec(**base)  # type: ignore[arg-type]


def fleet(n: int, rollout: int = 1) -> list[c.DeviceProgress]:
    return [c.DeviceProgress(f"d{i}", c.bucket(f"d{i}", f"rollout:{rollout}")) for i in range(n)]


def with_state(devs: list[c.DeviceProgress], state: str, pred, assigned: float = 0.0):
    return [c.DeviceProgress(d.device, d.bucket, state, assigned) if pred(d) else d for d in devs]


def step(state: c.RolloutState, devs: list[c.DeviceProgress], latency: c.Latency, now: float):
    """:func:`c.step` on the summary of ``devs`` (every device of the rollout)."""
    return c.step(state, c.Progress.of(state, devs), latency, now)


def test_bucket_is_stable_uniform_and_scoped() -> None:
    values = [c.bucket(f"dev-{i}", "rollout:1") for i in range(4000)]
    assert values == [c.bucket(f"dev-{i}", "rollout:1") for i in range(4000)]
    assert all(0 <= v < 100 for v in values)
    below_25 = sum(v < 25 for v in values) / len(values)
    assert 0.22 < below_25 < 0.28
    assert c.bucket("dev-1", "rollout:1") != c.bucket("dev-1", "rollout:2")


def test_first_step_assigns_only_the_first_phase() -> None:
    devs = fleet(100)
    decisions, gates = step(c.RolloutState(1, spec()), devs, c.Latency(), now=1000.0)
    assigned = decisions[0]
    assert isinstance(assigned, c.Assign)
    assert set(assigned.devices) == {d.device for d in devs if d.bucket < 10}
    assert gates.targeted == len(assigned.devices) and gates.phase_percent == 10


def test_phase_waits_for_soak_then_advances_and_assigns_next() -> None:
    devs = with_state(fleet(100), c.ACTIVE, lambda d: d.bucket < 10)
    state = c.RolloutState(1, spec())
    decisions, _ = step(state, devs, c.Latency(), now=1000.0)
    assert decisions == [c.Settled(1000.0)]
    settled = c.RolloutState(1, spec(), phase_settled=1000.0)
    assert step(settled, devs, c.Latency(), now=1059.0)[0] == []
    decisions, _ = step(settled, devs, c.Latency(), now=1061.0)
    assert decisions == [c.NextPhase(1, "phase 10% settled, soaked 61s, gates passed")]
    # the pass after the move assigns the new phase's devices, and only those
    decisions, gates = step(c.RolloutState(1, spec(), phase_index=1), devs, c.Latency(), 1062.0)
    assert [type(d) for d in decisions] == [c.Assign]
    assert set(decisions[0].devices) == {d.device for d in devs if 10 <= d.bucket < 50}
    assert gates.targeted == sum(d.bucket < 50 for d in devs)


def test_last_phase_completes() -> None:
    devs = with_state(fleet(20), c.ACTIVE, lambda d: True)
    state = c.RolloutState(1, spec(soak_s=0.0), phase_index=2, phase_settled=5.0)
    decisions, gates = step(state, devs, c.Latency(), now=6.0)
    assert isinstance(decisions[-1], c.Complete) and gates.active == 20


def test_failure_gate_waits_for_min_devices_then_reverts_everything_touched() -> None:
    devs = fleet(100)
    first = [d for d in devs if d.bucket < 50]
    failed2 = {first[0].device, first[1].device}
    devs = with_state(devs, c.FAILED, lambda d: d.device in failed2)
    state = c.RolloutState(1, spec(min_devices=3), phase_index=1)
    decisions, _ = step(state, devs, c.Latency(), now=10.0)
    assert not any(isinstance(d, c.GateFailed) for d in decisions)  # 2 finished < 3
    devs = with_state(devs, c.ACTIVE, lambda d: d.device == first[2].device)
    decisions, gates = step(state, devs, c.Latency(), now=11.0)
    gate = next(d for d in decisions if isinstance(d, c.GateFailed))
    assert gate.gate == "failure" and "2/3" in gate.reason
    assert decisions[-1] == c.Revert("gate failure failed")
    # the revert covers what the pass assigned too: every device of the phase is touched
    assigned = next(d for d in decisions if isinstance(d, c.Assign))
    assert {first[2].device, *failed2, *assigned.devices} == {d.device for d in first}
    assert gates.targeted == len(first) and gates.failure_pct == pytest.approx(200 / 3)


def test_failures_under_the_threshold_do_not_stop_the_rollout() -> None:
    devs = with_state(fleet(100), c.ACTIVE, lambda d: True)
    devs[0] = c.DeviceProgress(devs[0].device, devs[0].bucket, c.FAILED, 0.0)
    state = c.RolloutState(1, spec(max_failure_pct=5.0, soak_s=0), phase_index=2, phase_settled=0.0)
    decisions, gates = step(state, devs, c.Latency(), now=1.0)
    assert isinstance(decisions[-1], c.Complete) and gates.failed == 1


def test_install_timeout_marks_failed() -> None:
    devs = with_state(fleet(10), c.INSTALLING, lambda d: True, assigned=0.0)
    state = c.RolloutState(1, spec(min_devices=100), phase_index=2)
    decisions, gates = step(state, devs, c.Latency(), now=301.0)
    assert {d.device for d in decisions if isinstance(d, c.MarkFailed)} == {d.device for d in devs}
    assert gates.failed == 10 and gates.active == 0
    assert step(state, devs, c.Latency(), now=299.0)[0] == []


@pytest.mark.parametrize(
    ("candidate", "devices", "fails"),
    [(125.0, 3, True), (115.0, 3, False), (125.0, 2, False)],
    ids=["regressed", "within-budget", "too-few-devices"],
)
def test_latency_gate(candidate: float, devices: int, fails: bool) -> None:
    devs = with_state(fleet(50), c.ACTIVE, lambda d: d.bucket < 10)
    state = c.RolloutState(1, spec(max_latency_regression_pct=20.0))
    latency = c.Latency(
        baseline_p95_ms=100.0, candidate_p95_ms=candidate, candidate_devices=devices
    )
    decisions, gates = step(state, devs, latency, now=1.0)
    assert any(isinstance(d, c.GateFailed) and d.gate == "latency" for d in decisions) is fails
    assert gates.latency_regression_pct == pytest.approx(candidate - 100.0)


def test_paused_rollout_decides_nothing() -> None:
    state = c.RolloutState(1, spec(), status="paused")
    assert step(state, fleet(10), c.Latency(), now=1.0)[0] == []
