"""The read-only views the operator API and the console share, on SQLite and PostgreSQL: a
device's history, release details, an experiment's latency series, audit filters, fleet counts.
"""

# ruff: noqa: F811 - the fixture `h` is imported, then named as each test's argument

from __future__ import annotations

import time

import pytest
from edgeserve.fleet_server import experiments as ex
from edgeserve.fleet_server import views

# the engine tests' harness and its fixtures (`h` runs each test on SQLite and PostgreSQL)
from test_fleet_engine import Harness, h, start  # noqa: F401

from edgeserve.protocol import Telemetry, encode


def test_device_detail_has_installs_failures_and_telemetry(h: Harness) -> None:
    start(h, 1)
    h.engine.tick(time.time())
    for i in range(3):
        h.report(f"d{i:02d}", "ACTIVE", 1, 1)
    h.report("d03", "ROLLED_BACK", None, 1)  # health check failed on this one
    h.engine.tick(time.time())
    now = time.time()
    summary = {
        "model": "digits",
        "version": 1,
        "count": 40,
        "errors": 1,
        "window_start": now,
        "latency_ms": {"p50": 3.0, "p95": 5.0, "p99": 7.0},
    }
    h.engine.process([("es/test/dev/d00/telemetry", encode(Telemetry("d00", "now", (summary,))))])

    d = views.device_detail(h.store, "d03")
    assert [(i["rollout"], i["version"], i["baseline"]) for i in d["installs"]] == [(1, 1, None)]
    assert [(f["rollout"], f["reason_code"], f["error"]) for f in d["failures"]] == [
        (1, "health_check", "x")
    ]
    assert d["telemetry"] == []
    t = views.device_detail(h.store, "d00")["telemetry"]
    assert [(w["count"], w["errors"], w["p50"]) for w in t] == [(40, 1, 3.0)]
    assert views.device_detail(h.store, "d00")["failures"] == []

    listed = [
        {"id": dev.id, "tags": dict(dev.tags), "presence": dev.presence, "models": m}
        for dev in h.store.devices()
        for m in [{n: dict(s) for n, s in (dev.reported.get("models") or {}).items()}]
    ]
    assert [x["id"] for x in views.filter_devices(listed, state="active")] == [
        "d00",
        "d01",
        "d02",
    ]
    assert [x["id"] for x in views.filter_devices(listed, state="ROLLED_BACK")] == ["d03"]
    assert views.filter_devices(listed, tags={"hw": "y"}) == []
    summary_counts = views.fleet_summary(listed)
    assert summary_counts["devices"] == len(listed)
    assert {"model": "digits", "state": "ACTIVE", "devices": 3} in summary_counts["states"]


def test_audit_filters_by_action_prefix_literally(h: Harness) -> None:
    rid = start(h, 1)
    h.store.audit("op", "rollout_x.test", "rollout:9", "an underscore is not a wildcard")
    actions = [e["action"] for e in h.store.audit_entries(action="rollout.")]
    assert actions == ["rollout.start"]
    assert [e["action"] for e in h.store.audit_entries(action="rollout_")] == ["rollout_x.test"]
    assert h.store.audit_entries(f"rollout:{rid}", action="experiment.") == []


def test_release_details_and_experiment_series(h: Harness) -> None:
    rel = views.release_details(h.store)
    assert [(r["model"], r["version"]) for r in rel] == [("digits", 2), ("digits", 1)]
    assert all(r["precision"] == "fp32" and r["format"] == "onnx" for r in rel)
    assert all(len(r["signers"]) == 1 and len(r["signers"][0]) == 64 for r in rel)
    assert views.validation_summary(
        {
            "original": {"size_bytes": 400, "latency_ms": {"p50_ms": 2.0}},
            "converted": {"size_bytes": 100, "latency_ms": {"p50_ms": 1.0}},
            "accuracy_drop_points": 0.5,
        }
    ) == {
        "size_ratio": 0.25,
        "latency_p50_ratio": 0.5,
        "accuracy_drop_points": 0.5,
        "disagreement_points": None,
    }

    eid, devices = ex.start_experiment(h.store, "digits", 1, 2, 50, False, {"hw": "x"}, "op")
    h.engine.publish_desired(devices)
    arms = {d: h.desired(d).models["digits"].version for d in devices}
    now = round(time.time()) + 1.0
    for dev, version in arms.items():
        summaries = tuple(
            {
                "model": "digits",
                "version": version,
                "count": 100 if dev.endswith("0") else 300,
                "errors": 0,
                "window_start": now + k,
                "latency_ms": {"p50": 4.0 if dev.endswith("0") else 8.0, "p95": 9.0, "p99": 10.0},
            }
            for k in range(3)
        )
        h.engine.process(
            [(f"es/test/dev/{dev}/telemetry", encode(Telemetry(dev, "now", summaries)))]
        )
    series = views.experiment_series(h.store, eid)
    for arm in ("a", "b"):
        s = series["arms"][arm]
        mine = [d for d, v in arms.items() if v == s["version"]]
        assert s["t"] == [now, now + 1, now + 2]
        n_low = sum(1 for d in mine if d.endswith("0"))
        n_high = len(mine) - n_low
        weighted = (4.0 * 100 * n_low + 8.0 * 300 * n_high) / (100 * n_low + 300 * n_high)
        assert s["p50"] == pytest.approx([weighted] * 3)  # request-weighted over the devices
        assert s["requests"] == [100 * n_low + 300 * n_high] * 3
