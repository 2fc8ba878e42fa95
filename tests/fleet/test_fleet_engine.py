"""The server's engine in-process: real SQLite store, real signed releases and desired state,
reported/telemetry messages fed as MQTT payloads; the publish side is captured."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from edgeserve.fleet_server import experiments as ex
from edgeserve.fleet_server import rollout as r
from edgeserve.fleet_server.desired import DesiredBuilder
from edgeserve.fleet_server.engine import Engine
from edgeserve.fleet_server.releases import ingest_release
from edgeserve.fleet_server.rollout import controller as c
from edgeserve.fleet_server.rollout.views import rollout_status
from edgeserve.fleet_server.store import Store
from edgeserve.fleet_server.store.db import open_database
from edgeserve.fleet_server.store.records import Target
from support.fleet import Postgres, signed_release_tar, wait_for

from edgeserve.protocol import (
    DesiredState,
    InstallState,
    ModelStatus,
    Reported,
    Telemetry,
    encode,
)
from edgeserve.trust import SigningKey, generate_key, sign_document, verify_document
from edgeserve.trust.keydir import load_keyring

N = 20


class Harness:
    def __init__(self, tmp: Path, keys: Path, database: str) -> None:
        self.keys = keys
        self.database = database
        self.keyring = load_keyring(keys / "keyring.json")
        self.store = Store(open_database(database))
        artifacts = tmp / "artifacts"
        artifacts.mkdir()
        for v in (1, 2):
            ingest_release(
                self.store,
                artifacts,
                signed_release_tar(tmp / f"v{v}", keys, version=v, seed=v),
                self.keyring,
            )
        for i in range(N):
            self.store.add_device(f"d{i:02d}", {"hw": "x"}, "$7$unused")
        self.sent: dict[str, bytes] = {}
        builder = DesiredBuilder(
            self.store, SigningKey.load(keys / "fleet.key"), "test", "http://127.0.0.1:1", 3600
        )
        self.engine = Engine(
            self.store,
            builder,
            "es/",
            "test",
            lambda topic, payload: self.sent.__setitem__(topic, payload),
        )

    def desired(self, device: str) -> DesiredState:
        signed = verify_document(
            self.sent[f"es/test/dev/{device}/desired"],
            self.keyring,
            datetime.now(timezone.utc),
            "desired",
        )
        return DesiredState.from_dict(signed)

    def report(self, device: str, state: str, active: int | None, target: int) -> None:
        # as a device does: with the seq of the desired document it is acting on (the store
        # keeps a report only when it is not older than the one it has)
        seen = f"es/test/dev/{device}/desired" in self.sent
        rep = Reported(
            device,
            self.desired(device).seq if seen else 0,
            "now",
            {
                "digits": ModelStatus(
                    state=InstallState(state),
                    active=active,
                    target=target,
                    error=None if state == "ACTIVE" else "x",
                    reason_code=None if state == "ACTIVE" else "health_check",
                )
            },
        )
        self.engine.process([(f"es/test/dev/{device}/reported", encode(rep))])

    def status(self, rid: int) -> dict:
        return rollout_status(self.store, rid)


@pytest.fixture(params=["sqlite", "postgresql"])
def h(request: pytest.FixtureRequest, tmp_path: Path, fleet_keys: Path) -> Iterator[Harness]:
    if request.param == "sqlite":
        database = f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        database = pg.create_database(f"t{uuid.uuid4().hex[:12]}")
    harness = Harness(tmp_path, fleet_keys, database)
    yield harness
    harness.store.db.close()


def start(h: Harness, version: int, **kw: object) -> int:
    spec = c.RolloutSpec(model="digits", version=version, selector={"hw": "x"}, **kw)  # type: ignore[arg-type]
    return r.create_rollout(h.store, spec, "test")


def test_three_phase_rollout_completes_with_signed_desired_state(h: Harness) -> None:
    rid = start(h, 2, phases=(10, 50, 100), max_failure_pct=0.0, min_devices=1)
    seen: set[str] = set()
    for _ in range(10):
        h.engine.tick(time.time())
        for topic in list(h.sent):
            device = topic.split("/")[3]
            if device not in seen:
                seen.add(device)
                d = h.desired(device)
                assert d.device == device and d.seq == 1
                assert d.models["digits"].version == 2 and not d.models["digits"].allow_downgrade
                h.report(device, "ACTIVE", 2, 2)
        if h.status(rid)["status"] == "completed":
            break
    st = h.status(rid)
    assert st["status"] == "completed" and st["counts"]["active"] == N
    actions = [e["action"] for e in reversed(st["audit"])]
    assert actions[0] == "rollout.start" and actions[-1] == "rollout.complete"
    assert actions.count("rollout.next_phase") == 2
    assert all(e["reason"] for e in st["audit"])


def test_failing_version_is_rolled_back_to_the_baseline(h: Harness) -> None:
    first = start(h, 1)  # everyone on v1 first
    h.engine.tick(time.time())
    for i in range(N):
        h.report(f"d{i:02d}", "ACTIVE", 1, 1)
    h.engine.tick(time.time())
    assert h.status(first)["status"] == "completed"

    rid = start(h, 2, phases=(30, 100), max_failure_pct=10.0, min_devices=3)
    h.engine.tick(time.time())
    targeted = [d["device"] for d in h.status(rid)["devices"] if d["state"] == "installing"]
    assert 3 <= len(targeted) < N
    assert h.status(rid)["installing"] == {"assigned": len(targeted)}
    h.report(targeted[0], "DOWNLOADING", 1, 2)
    assert h.status(rid)["installing"] == {"assigned": len(targeted) - 1, "DOWNLOADING": 1}
    for dev in targeted:
        h.report(dev, "ROLLED_BACK", 1, 2)  # health check failed on the device
    h.engine.tick(time.time())
    st = h.status(rid)
    assert st["status"] == "paused" and "gate failure failed" in st["reason"]
    assert st["counts"]["reverted"] == len(targeted) and st["counts"]["pending"] == N - len(
        targeted
    )
    for dev in targeted:
        d = h.desired(dev)
        assert d.models["digits"].version == 1 and d.models["digits"].allow_downgrade
        assert d.seq == 3  # v1, v2, then the signed rollback
    assert {e["action"] for e in st["audit"]} >= {"rollout.gate_failed", "rollout.revert"}


def test_operator_rollback_and_abort(h: Harness) -> None:
    rid = start(h, 2)
    h.engine.tick(time.time())
    changed = r.operator_action(h.store, rid, "rollback", "alice", "bad smell")
    assert len(changed) == N
    h.engine.publish_desired(changed)
    assert "digits" not in h.desired("d00").models  # no baseline: the model is dropped
    assert h.status(rid)["status"] == "rolled_back"
    with pytest.raises(Exception, match="cannot pause"):
        r.operator_action(h.store, rid, "pause", "alice", "")
    rid2 = start(h, 2)
    r.operator_action(h.store, rid2, "abort", "alice", "enough")
    assert h.status(rid2)["status"] == "aborted"
    assert h.status(rid2)["audit"][0]["actor"] == "alice"


def test_experiment_reports_a_verdict_and_promotes_the_winner(h: Harness) -> None:
    eid, devices = ex.start_experiment(h.store, "digits", 1, 2, 50, False, {"hw": "x"}, "op")
    h.engine.publish_desired(devices)
    arms = {d: h.desired(d).models["digits"].version for d in devices}
    assert set(arms.values()) == {1, 2}
    now = time.time()
    for dev, version in arms.items():
        summaries = [
            {
                "model": "digits",
                "version": version,
                "count": 500,
                "errors": 2,
                "window_start": now + k,
                "latency_ms": {
                    "p50": (8.0 if version == 2 else 10.0) + 0.1 * (k % 3),
                    "p95": 20.0,
                    "p99": 30.0,
                },
            }
            for k in range(3)
        ]
        h.engine.process(
            [(f"es/test/dev/{dev}/telemetry", encode(Telemetry(dev, "now", tuple(summaries))))]
        )
    rep = ex.report(h.store, eid)
    assert rep["verdict"] == "b better", rep
    assert rep["a"]["requests"] == 1500 * list(arms.values()).count(1)
    lo, hi = rep["latency_p50_diff_ci_ms"]
    assert lo < -2.0 < hi < 0
    rid = ex.promote(h.store, eid, "op")
    assert h.status(rid)["version"] == 2
    assert ex.experiment(h.store, eid)["status"] == "promoted"
    json.dumps(rep)  # the API can serialise it


def test_one_controller_across_replicas_by_advisory_lock(postgres: Postgres) -> None:
    url = postgres.create_database(f"t{uuid.uuid4().hex[:12]}")
    first, second = Store(open_database(url)), Store(open_database(url))
    try:
        assert first.try_leader() and not second.try_leader()
        first.db.close()  # the leader dies: its session and its lock go away (asynchronously)
        wait_for(second.try_leader, 10, "the second replica taking over")
    finally:
        first.db.close()
        second.db.close()
    sqlite = Store(open_database("sqlite:///:memory:"))
    assert sqlite.try_leader()
    sqlite.db.close()


def _telemetry(h: Harness, device: str, version: int, p95: float, now: float) -> None:
    summaries = tuple(
        {
            "kind": "summary",
            "model": "digits",
            "version": version,
            "window_start": now + k,
            "requests": 100,
            "error_count": 0,
            "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.5},
        }
        for k in range(2)
    )
    h.engine.process(
        [(f"es/test/dev/{device}/telemetry", encode(Telemetry(device, "now", summaries)))]
    )


def test_latency_regression_gate_rolls_back(h: Harness) -> None:
    first = start(h, 1)
    h.engine.tick(time.time())
    now = time.time()
    for i in range(N):
        h.report(f"d{i:02d}", "ACTIVE", 1, 1)
        _telemetry(h, f"d{i:02d}", 1, 10.0, now)  # baseline p95 10 ms
    h.engine.tick(time.time())
    assert h.status(first)["status"] == "completed"
    rid = start(
        h, 2, phases=(50, 100), max_failure_pct=50.0, min_devices=3, max_latency_regression_pct=20.0
    )
    h.engine.tick(time.time())
    targeted = [d["device"] for d in h.status(rid)["devices"] if d["state"] == "installing"]
    for dev in targeted:
        h.report(dev, "ACTIVE", 2, 2)
        _telemetry(h, dev, 2, 13.0, time.time() + 1)  # +30 %
    h.engine.tick(time.time())
    st = h.status(rid)
    assert st["status"] == "paused" and st["reason"].startswith("gate latency failed"), st
    assert st["gates"]["latency_regression_pct"] == pytest.approx(30.0)
    assert all(h.desired(d).models["digits"].version == 1 for d in targeted)


def test_install_timeout_fails_silent_devices(h: Harness) -> None:
    rid = start(h, 2, max_failure_pct=0.0, min_devices=1, install_timeout_s=0.2)
    h.engine.tick(time.time())
    time.sleep(0.3)  # nobody reports
    h.engine.tick(time.time())
    st = h.status(rid)
    assert st["status"] == "paused" and "gate failure failed" in st["reason"]
    failed = [e for e in st["audit"] if e["action"] == "rollout.device_failed"]
    assert failed and all("install timeout" in e["reason"] for e in failed)


def test_desired_state_is_re_signed_before_it_expires(h: Harness) -> None:
    h.engine.builder.ttl_s = 100
    start(h, 1)
    now = time.time()
    h.engine.tick(now)
    first = h.desired("d00")
    h.engine.tick(now + 10)  # far from expiry: nothing new
    assert h.desired("d00").seq == first.seq
    h.engine.tick(now + 60)  # past half-life: a fresh document, new seq, later expiry
    fresh = h.desired("d00")
    assert fresh.seq == first.seq + 1 and fresh.expires > first.expires
    assert fresh.models == first.models


def test_status_without_devices_counts_in_the_database_what_the_rows_say(h: Harness) -> None:
    rid = start(h, 2, phases=(50, 100), max_failure_pct=100.0, min_devices=1)
    h.engine.tick(time.time())
    installing = [d["device"] for d in h.status(rid)["devices"] if d["state"] == "installing"]
    h.report(installing[0], "ACTIVE", 2, 2)
    h.report(installing[1], "FAILED", None, 2)
    h.report(installing[2], "DOWNLOADING", None, 2)
    h.engine.tick(time.time())
    full, lean = h.status(rid), rollout_status(h.store, rid, devices=False)
    assert "devices" not in lean and len(full["devices"]) == N == lean["device_count"]
    for key in ("counts", "installing", "phase_targets", "failures", "status", "phase_index"):
        assert lean[key] == full[key], key
    assert lean["counts"]["active"] == 1 and lean["counts"]["failed"] == 1
    assert 0 < lean["phase_targets"] < N and lean["installing"]


def test_republish_sends_the_same_bytes_and_new_seq_only_where_content_changed(
    h: Harness, tmp_path: Path
) -> None:
    start(h, 1)
    h.engine.tick(time.time())
    first = dict(h.sent)
    assert len(first) == N
    h.sent.clear()
    h.engine.republish()  # what a broker reconnect does
    assert h.sent == first  # byte for byte: same seq, issued time and signature
    # d00's target changes behind the engine's back: its old seq must not carry new content
    h.store.set_targets("digits", [("d00", None)])
    h.sent.clear()
    h.engine.republish()
    changed = "es/test/dev/d00/desired"
    assert {t: p for t, p in h.sent.items() if t != changed} == {
        t: p for t, p in first.items() if t != changed
    }
    assert h.desired("d00").seq == 2 and h.desired("d00").models == {}
    # a new fleet key: every document is signed anew, under a new seq
    h.engine.builder.fleet_key = generate_key()
    h.sent.clear()
    h.engine.republish()
    assert len(h.sent) == N and all(h.sent[t] != first[t] for t in first)


def test_audit_names_the_phase_devices_enter(h: Harness) -> None:
    rid = start(h, 1, phases=(25, 100))
    h.engine.tick(time.time())
    first = [d["device"] for d in h.status(rid)["devices"] if d["state"] == "installing"]
    st = h.status(rid)
    assert st["phase_percent"] == 25 and st["phase_targets"] == len(first)
    assert st["soak_left_s"] is None  # not settled yet
    for dev in first:
        h.report(dev, "ACTIVE", 1, 1)
    h.engine.tick(time.time())  # settled, zero soak: next phase and its devices assigned
    h.engine.tick(time.time())
    assigns = [e for e in reversed(h.status(rid)["audit"]) if e["action"] == "rollout.assign"]
    assert [e["detail"]["phase"] for e in assigns] == [25, 100]
    assert assigns[0]["reason"] == f"{len(first)} devices enter phase 25%"
    assert assigns[1]["reason"] == f"{N - len(first)} devices enter phase 100%"
    assert h.status(rid)["phase_targets"] == N


def test_device_failure_is_kept_after_the_revert(h: Harness) -> None:
    start(h, 1)
    h.engine.tick(time.time())
    for i in range(N):
        h.report(f"d{i:02d}", "ACTIVE", 1, 1)
    h.engine.tick(time.time())
    rid = start(h, 2, phases=(50, 100), max_failure_pct=0.0, min_devices=1)
    h.engine.tick(time.time())
    canary = next(d["device"] for d in h.status(rid)["devices"] if d["state"] == "installing")
    rep = Reported(
        canary,
        2,
        "now",
        {
            "digits": ModelStatus(
                state=InstallState.FAILED,
                active=1,
                target=2,
                error="activation failed: output probs has NaN or infinite values",
                reason_code="activation",
            )
        },
    )
    h.engine.process([(f"es/test/dev/{canary}/reported", encode(rep))])
    h.engine.tick(time.time())
    h.report(canary, "ACTIVE", 1, 1)  # the revert arrived: the device reports v1 again
    st = h.status(rid)
    assert st["status"] == "paused"
    entry = next(d for d in st["devices"] if d["device"] == canary)
    assert entry["state"] == "reverted"
    assert entry["outcome"] == {
        "state": "FAILED",
        "reason_code": "activation",
        "error": "activation failed: output probs has NaN or infinite values",
        "version": 2,
        "phase": 50,
        "ts": entry["outcome"]["ts"],
    }
    failed = [e for e in st["audit"] if e["action"] == "rollout.device_failed"]
    assert [e["detail"]["device"] for e in failed] == [canary]
    assert failed[0]["detail"]["reason_code"] == "activation"
    assert "NaN" in failed[0]["reason"]


def test_a_report_older_than_the_stored_one_is_not_recorded(h: Harness) -> None:
    # Replicas on a shared subscription get one device's reports on different connections:
    # DOWNLOADING can be stored after ACTIVE (same seq, same second). The store keeps ACTIVE.
    rid = start(h, 1)
    h.engine.tick(time.time())
    h.report("d00", "ACTIVE", 1, 1)
    h.report("d00", "DOWNLOADING", None, 1)
    st = h.status(rid)
    assert next(d for d in st["devices"] if d["device"] == "d00")["state"] == "active"
    assert h.store.device("d00").reported["models"]["digits"]["state"] == "ACTIVE"
    assert h.engine.counters.stale_reports == 1


def test_the_controller_fails_over_and_re_signs_every_targeted_device(
    postgres: Postgres, tmp_path: Path, fleet_keys: Path
) -> None:
    a = Harness(tmp_path, fleet_keys, postgres.create_database(f"t{uuid.uuid4().hex[:12]}"))
    b_store = Store(open_database(a.database))
    b_sent: dict[str, bytes] = {}
    b = Engine(
        b_store,
        DesiredBuilder(
            b_store, SigningKey.load(fleet_keys / "fleet.key"), "test", "http://127.0.0.1:2", 3600
        ),
        "es/",
        "test",
        lambda topic, payload: b_sent.__setitem__(topic, payload),
    )
    try:
        rid = start(a, 1, phases=(50, 100))
        a.engine.tick(time.time())
        assert a.engine.leader and a.sent
        assigned = {t.split("/")[3]: a.desired(t.split("/")[3]).seq for t in a.sent}
        b.request_republish()  # a broker reconnect on the other replica
        b.tick(time.time())
        assert not b.leader and b_sent == {}  # it leaves the desired documents to the leader
        a.store.db.close()  # the controller dies; its session and lock go away
        wait_for(lambda: (b.tick(time.time()), b.leader)[1], 10, "the other replica taking over")
        for device, seq in assigned.items():  # re-signed by the new controller, new seq
            doc = DesiredState.from_dict(
                verify_document(
                    b_sent[f"es/test/dev/{device}/desired"],
                    a.keyring,
                    datetime.now(timezone.utc),
                    "desired",
                )
            )
            assert doc.seq == seq + 1 and doc.models["digits"].version == 1
        assert rollout_status(b_store, rid)["status"] == "running"
    finally:
        b_store.db.close()
        a.store.db.close()


def test_desired_payload_is_the_canonical_json_of_the_signed_document(h: Harness) -> None:
    """The builder encodes release envelopes and keyrings once for every document; the bytes
    are still those of encoding the whole signed document, also after the keyrings change."""
    builder = h.engine.builder
    key = SigningKey.load(h.keys / "fleet.key")
    issued = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    split = Target("digits", 1, True, {"b_version": 2, "weight_b": 30}, "exp-1")
    keyring = json.loads((h.keys / "keyring.json").read_bytes())
    for keyrings in ((), (keyring,), (keyring, keyring)):
        builder.keyrings = keyrings
        for targets in ([Target("digits", 2)], [split], [Target("digits", 1, experiment="e")]):
            doc = DesiredState(
                fleet="test",
                device="d01",
                seq=7,
                issued="2026-12-02T12:00:00Z",
                expires="2026-12-02T13:00:00Z",
                models={t.model: builder._target(t) for t in targets},
                keyrings=keyrings,
            )
            expected = encode(sign_document(doc.to_dict(), [key]))
            assert builder.sign("d01", targets, 7, issued) == expected
