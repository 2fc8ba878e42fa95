"""The store's rollout-device queries on SQLite and PostgreSQL: a report batch reads only its
own devices' rows (in chunks under the parameter limits), the controller's progress counted by
the database decides as every device's row would, and conflicts are ConflictError."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from edgeserve.fleet_server import rollout as r
from edgeserve.fleet_server.rollout import controller as c
from edgeserve.fleet_server.store import Store
from edgeserve.fleet_server.store.base import CHUNK
from edgeserve.fleet_server.store.db import open_database
from edgeserve.fleet_server.store.records import Target

from edgeserve.errors import ConflictError


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(open_database(database_url))
    yield s
    s.close()


def _rollout_of(store: Store, n: int) -> tuple[int, list[str]]:
    devices = [f"d{i:04d}" for i in range(n)]
    with store.transaction():
        for d in devices:
            store.add_device(d, {"hw": "x"}, "$7$unused")
        rid = store.add_rollout("m", 2, {"phases": [100]}, now=1.0)
        store.add_rollout_devices(rid, [(d, 50.0, 1) for d in devices], "installing", 1.0)
    return rid, devices


def test_device_states_read_only_the_batch(store: Store) -> None:
    rid, devices = _rollout_of(store, CHUNK + 20)  # more than one IN (...) chunk
    store.set_rollout_devices(rid, devices[:3], "pending", "", 2.0)
    batch = [*devices[:5], *devices[-CHUNK - 5 :], "unknown"]
    rows = store.rollout_device_states(rid, batch, ("installing", "active", "failed"))
    got = {d for d, _, _ in rows}
    # the pending ones and the unknown id are left out; every other batch member is read
    assert got == set(batch) - {*devices[:3], "unknown"}
    assert all(state == "installing" and detail == "" for _, state, detail in rows)
    assert store.rollout_device_states(rid, [], ("installing",)) == []


def test_update_states_and_members(store: Store) -> None:
    rid, devices = _rollout_of(store, 4)
    store.update_rollout_device_states(rid, [(devices[0], "active", "active")], 3.0)
    assert store.rollout_state_counts(rid) == {"active": 1, "installing": 3}
    assert store.rollout_members(rid) == dict.fromkeys(devices, 1)
    assert [d.id for d in store.devices_in([devices[2], devices[0], "nope"])] == [
        devices[0],
        devices[2],
    ]
    assert store.active_rollout_of("m") == rid  # add_rollout starts it running
    store.set_rollout_status(rid, "completed", "done")
    assert store.active_rollout_of("m") is None
    assert store.rollout(rid).reason == "done"  # type: ignore[union-attr]


def test_taken_device_id_is_a_conflict(store: Store) -> None:
    store.add_device("d1", {}, "$7$unused")
    with pytest.raises(ConflictError, match="already exists"):
        store.add_device("d1", {}, "$7$unused")


def test_next_desired_assigns_seqs_and_reads_targets_in_chunks(store: Store) -> None:
    _, devices = _rollout_of(store, CHUNK + 3)  # more than one transaction's chunk
    split = {"b_version": 3, "weight_b": 10}
    store.set_targets("m", [(devices[0], Target("m", 2))])
    store.set_targets("n", [(devices[0], Target("n", 1, allow_downgrade=True))])
    store.set_targets("m", [(devices[-1], Target("m", 2, split=split, experiment="e1"))])
    first = store.next_desired([*devices, "unknown", devices[0]], expires=100.0)
    assert set(first) == set(devices)  # unknown ids left out, duplicates counted once
    assert {seq for seq, _ in first.values()} == {1}
    assert first[devices[0]][1] == [Target("m", 2), Target("n", 1, allow_downgrade=True)]
    assert first[devices[-1]][1] == [Target("m", 2, split=split, experiment="e1")]
    assert first[devices[1]][1] == []
    again = store.next_desired(devices[:2], expires=200.0)
    assert {d: seq for d, (seq, _) in again.items()} == {devices[0]: 2, devices[1]: 2}
    assert store.targets(devices[0]) == first[devices[0]][1]
    # the expiry moved with the seq: only the devices left out of the second call expire
    assert set(store.expiring(150.0)) == set(devices[2:])


def test_progress_counted_by_the_database_decides_as_the_whole_list(store: Store) -> None:
    """The controller's summary from SQL (counts, the phase's pending devices, old installs)
    makes the same decisions as the summary of every device's row, at each phase."""
    spec = c.RolloutSpec("m", 2, phases=(10, 50, 100), install_timeout_s=100.0, min_devices=50)
    devices = [f"d{i:04d}" for i in range(CHUNK + 100)]
    with store.transaction():
        for d in devices:
            store.add_device(d, {"hw": "x"}, "$7$unused")
        rid = store.add_rollout("m", 2, spec.to_dict(), now=1.0)
        rows = [(d, c.bucket(d, f"rollout:{rid}"), 1) for d in devices]
        store.add_rollout_devices(rid, rows, c.PENDING, 1.0)
        # a mix of states below 50%: old and recent installs, active, failed, reverted
        states = [c.INSTALLING, c.INSTALLING, c.ACTIVE, c.FAILED, c.REVERTED, c.PENDING]
        for k, state in enumerate(states):
            chosen = [d for j, (d, b, _) in enumerate(rows) if b < 50 and j % 6 == k]
            store.set_rollout_devices(rid, chosen, state, "", 10.0 + 100 * (k == 0), True)
    everything = [
        c.DeviceProgress(d, b, s, a)
        for d, b, s, a in store.db.query(
            "SELECT device, bucket, state, assigned FROM rollout_devices WHERE rollout = ? "
            "ORDER BY bucket",
            (rid,),
        )
    ]
    for phase in range(3):
        state = c.RolloutState(rid, spec, phase_index=phase)
        counted = r.progress(store, state, now=150.0)
        whole = c.Progress.of(state, everything)
        assert counted.unsettled == whole.unsettled
        assert sorted(counted.pending, key=repr) == sorted(whole.pending, key=repr)
        assert {**dict.fromkeys(c.DEVICE_STATES, 0), **counted.counts} == whole.counts
        # only the installs assigned at 10.0 are old enough to be read
        assert {d.assigned for d in counted.installing} == {10.0}
        decided = c.step(state, counted, c.Latency(), 150.0)
        assert decided[0]  # the old installs fail, the phase's pending devices are assigned
        assert sorted(decided[0], key=repr) == sorted(
            c.step(state, whole, c.Latency(), 150.0)[0], key=repr
        )
        assert decided[1] == c.step(state, whole, c.Latency(), 150.0)[1]


def test_set_targets_replaces_and_removes_in_chunks(store: Store) -> None:
    devices = [f"d{i:04d}" for i in range(CHUNK + 10)]
    with store.transaction():
        for d in devices:
            store.add_device(d, {}, "$7$unused")
        store.set_targets("m", [(d, Target("m", 1)) for d in devices])
        store.set_targets("other", [(devices[0], Target("other", 7))])
        store.set_targets("m", [(devices[1], None), (devices[2], Target("m", 2, True))])
    versions = store.target_versions("m")
    assert len(versions) == len(devices) - 1 and devices[1] not in versions
    assert versions[devices[2]] == 2 and versions[devices[-1]] == 1
    assert [t.model for t in store.targets(devices[0])] == ["m", "other"]
