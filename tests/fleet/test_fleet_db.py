"""The database handle under threads, on SQLite and PostgreSQL: a thread keeps one connection
for its whole transaction (nested blocks join it, a failure rolls all of it back), and on
PostgreSQL another thread's reads and writes go ahead while a transaction is open."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from edgeserve.fleet_server.store.db import POSTGRES_CONNECTIONS, Database, open_database
from support.fleet import Postgres

from edgeserve.errors import StorageError

# generous: only reached when a thread is stuck behind another's transaction
_STUCK_S = 30.0


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    d = open_database(database_url)
    d.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
    yield d
    d.close()


def _in_thread(fn: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except Exception as exc:  # handed to the test to assert on
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_nested_blocks_join_and_a_failure_undoes_all(db: Database) -> None:
    with db.transaction():
        db.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
        with db.transaction():
            db.execute("INSERT INTO t VALUES (?, ?)", ("b", 2))
        # the nested block's write is visible to this thread before the outer commit
        assert db.query("SELECT k FROM t ORDER BY k") == [("a",), ("b",)]
    with pytest.raises(StorageError), db.transaction():
        db.execute("INSERT INTO t VALUES (?, ?)", ("c", 3))
        with db.transaction():
            db.execute("INSERT INTO t VALUES (?, ?)", ("a", 9))  # duplicate key
    assert db.query("SELECT k, v FROM t ORDER BY k") == [("a", 1), ("b", 2)]
    # the failed transaction left no connection behind in a broken state
    db.execute("INSERT INTO t VALUES (?, ?)", ("d", 4))
    assert db.one("SELECT count(*) FROM t") == (3,)


def test_threads_take_turns_and_see_only_committed_rows(db: Database) -> None:
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction():
            db.execute("INSERT INTO t VALUES (?, ?)", ("held", 1))
            inside.set()
            release.wait(_STUCK_S)

    holder, _ = _in_thread(hold)
    assert inside.wait(_STUCK_S)
    if db.dialect == "postgresql":
        # another connection: reads and writes go ahead while the transaction is open, and do
        # not see its uncommitted row
        reader, got = _in_thread(lambda: db.query("SELECT k FROM t"))
        reader.join(_STUCK_S)
        assert got == [[]], "a read waited for another thread's transaction"
        writer, done = _in_thread(lambda: db.execute("INSERT INTO t VALUES (?, ?)", ("w", 2)))
        writer.join(_STUCK_S)
        assert done == [1]
    release.set()
    holder.join(_STUCK_S)
    assert not holder.is_alive()
    rows = {k for (k,) in db.query("SELECT k FROM t")}
    assert rows == ({"held", "w"} if db.dialect == "postgresql" else {"held"})


def test_postgres_opens_no_more_than_its_connections(postgres: Postgres) -> None:
    db = open_database(postgres.create_database(f"t{uuid.uuid4().hex[:12]}"))
    try:
        n = POSTGRES_CONNECTIONS
        entered = threading.Semaphore(0)
        release = threading.Event()

        def hold() -> None:
            with db.transaction():
                entered.release()
                release.wait(_STUCK_S)

        holders = [_in_thread(hold)[0] for _ in range(n)]
        for _ in range(n):
            assert entered.acquire(timeout=_STUCK_S)
        sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        # every connection is in a transaction: one more statement waits for one to be free
        waiter, got = _in_thread(lambda: db.one(sessions))
        waiter.join(0.5)
        assert waiter.is_alive() and got == []
        release.set()
        waiter.join(_STUCK_S)
        assert got == [(n,)]
        for t in holders:
            t.join(_STUCK_S)
    finally:
        db.close()
