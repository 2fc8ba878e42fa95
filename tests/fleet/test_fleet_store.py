"""The store's rollout-device queries on SQLite and PostgreSQL: a report batch reads only its
own devices' rows (in chunks under the parameter limits), and conflicts are ConflictError."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
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
    store.set_target(devices[0], Target("m", 2), "m")
    store.set_target(devices[0], Target("n", 1, allow_downgrade=True), "n")
    store.set_target(devices[-1], Target("m", 2, split=split, experiment="e1"), "m")
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
