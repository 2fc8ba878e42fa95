"""One small database handle for SQLite (stdlib) and PostgreSQL (psycopg), same SQL.

The store writes portable SQL with ``?`` placeholders; for PostgreSQL they become ``%s``
(psycopg's paramstyle). Both engines take ``INSERT ... ON CONFLICT (...) DO UPDATE SET x =
excluded.x`` (SQLite >= 3.24, PostgreSQL >= 9.5). SQLite runs in WAL mode so readers never block
the writer (https://www.sqlite.org/wal.html). SQLite gets one connection per process, which
its threads take in turn: the server's writes are small and batched, and SQLite serialises
writers anyway. PostgreSQL gets a few (:data:`POSTGRES_CONNECTIONS`), one per thread at a time,
so that a long transaction of one thread never holds up the others.
"""

from __future__ import annotations

import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeserve.errors import ConfigError, StorageError

__all__ = ["Database", "open_database"]

Row = tuple[Any, ...]

# PostgreSQL connections of one process at most: the ingest thread, the rollout controller and
# the API's threads (a request waits for a free connection when all are busy)
POSTGRES_CONNECTIONS = 6


class Database:
    """Connections with ``query``/``execute`` and ``transaction()``, safe to share between
    threads.

    A thread holds one connection for the whole of its transaction, and takes any idle one
    for a statement outside a transaction. SQLite has one connection (its writers serialise
    anyway); PostgreSQL opens up to ``max_connections`` as threads need them, so that the API
    answers while the ingest thread and the rollout controller each hold a transaction. Idle
    connections stay open until :meth:`close`: a session-level advisory lock taken on one (the
    controller's election) lives as long as the connection.

    Attributes:
        dialect: ``sqlite`` or ``postgresql``.
    """

    def __init__(self, connect: Callable[[], Any], dialect: str, max_connections: int = 1) -> None:
        self.dialect = dialect
        self._connect = connect
        self._max = max_connections
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._all: list[Any] = []
        self._open_lock = threading.Lock()
        self._local = threading.local()  # .conn and .depth of this thread's transaction
        self._idle.put(self._new())

    def _new(self) -> Any:
        conn = self._connect()
        self._all.append(conn)
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """This thread's transaction's connection, or an idle one for the block."""
        held = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            with self._open_lock:
                grow = len(self._all) < self._max
                conn = self._new() if grow else None
            if conn is None:
                conn = self._idle.get()
        try:
            yield conn
        finally:
            self._idle.put(conn)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Run the block atomically; nested use joins the outer transaction.

        Raises:
            StorageError: the database failed.
        """
        if getattr(self._local, "conn", None) is not None:
            self._local.depth += 1
            try:
                yield self
            finally:
                self._local.depth -= 1
            return
        with self._connection() as conn:
            self._raw(conn, "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
            self._local.conn, self._local.depth = conn, 1
            try:
                yield self
            except BaseException:
                self._local.conn = None
                self._raw(conn, "ROLLBACK")
                raise
            self._local.conn = None
            self._raw(conn, "COMMIT")

    def _raw(self, conn: Any, sql: str) -> None:
        try:
            conn.execute(sql)
        except Exception as exc:
            raise StorageError(f"database: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a SELECT and return every row.

        Raises:
            StorageError: the database failed.
        """
        with self._connection() as conn:
            try:
                cur = conn.execute(self._sql(sql), tuple(params))
                return [tuple(r) for r in cur.fetchall()]
            except Exception as exc:
                raise StorageError(f"database: {exc}") from exc

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a SELECT, or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement (inside the current transaction if any); return rows affected.

        Raises:
            StorageError: the database failed (constraint violations included).
        """
        with self._connection() as conn:
            try:
                cur = conn.execute(self._sql(sql), tuple(params))
                return int(cur.rowcount or 0)
            except Exception as exc:
                raise StorageError(f"database: {exc}") from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for many parameter rows.

        Raises:
            StorageError: the database failed.
        """
        if not rows:
            return
        with self._connection() as conn:
            try:
                if self.dialect == "sqlite":
                    conn.executemany(sql, [tuple(r) for r in rows])
                else:
                    with conn.cursor() as cur:
                        cur.executemany(self._sql(sql), [tuple(r) for r in rows])
            except Exception as exc:
                raise StorageError(f"database: {exc}") from exc

    def retryable(self, exc: StorageError) -> bool:
        """Whether ``exc`` is a PostgreSQL deadlock or serialisation failure (SQLSTATE 40P01,
        40001), after which the whole transaction may simply run again."""
        return getattr(exc.__cause__, "sqlstate", None) in ("40P01", "40001")

    def close(self) -> None:
        """Close every connection (their sessions' advisory locks go with them)."""
        with self._open_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def open_database(url: str) -> Database:
    """Open ``sqlite:///path`` (created if missing, WAL) or ``postgresql://...``.

    Args:
        url: the database URL.

    Returns:
        An open :class:`Database` in autocommit mode (transactions are explicit).

    Raises:
        ConfigError: unknown scheme, or psycopg missing for PostgreSQL.
        StorageError: the database cannot be opened.
    """
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])

        def connect_sqlite() -> sqlite3.Connection:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: we issue BEGIN/COMMIT ourselves (sqlite3 docs,
                # "Transaction control"); check_same_thread=False because one thread at a time
                # holds the connection (Database._connection)
                conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL-safe
                conn.execute("PRAGMA busy_timeout=10000")  # ms; the CLI may read while we write
                conn.execute("PRAGMA foreign_keys=ON")
            except (sqlite3.Error, OSError) as exc:
                raise StorageError(f"cannot open {path}: {exc}") from exc
            return conn

        return Database(connect_sqlite, "sqlite")
    if re.match(r"postgres(ql)?://", url):
        try:
            import psycopg
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "a postgresql:// database needs psycopg: pip install 'edgeserve-toolkit[postgres]'"
            ) from exc

        def connect_postgres() -> Any:
            try:
                return psycopg.connect(url, autocommit=True)
            except Exception as exc:
                raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc

        return Database(connect_postgres, "postgresql", POSTGRES_CONNECTIONS)
    raise ConfigError(f"database {url!r}: use sqlite:///path or postgresql://...")
