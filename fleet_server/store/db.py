"""One small database handle for SQLite (stdlib) and PostgreSQL (psycopg), same SQL.

The store writes portable SQL with ``?`` placeholders; for PostgreSQL they become ``%s``
(psycopg's paramstyle). Both engines take ``INSERT ... ON CONFLICT (...) DO UPDATE SET x =
excluded.x`` (SQLite >= 3.24, PostgreSQL >= 9.5). SQLite runs in WAL mode so readers never block
the writer (https://www.sqlite.org/wal.html). One connection per process, serialised by a lock:
the server's writes are small and batched, which keeps this simple and fast enough for the
figures in the README; more replicas scale out through PostgreSQL.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeserve.errors import ConfigError, StorageError

__all__ = ["Database", "open_database"]

Row = tuple[Any, ...]


class Database:
    """A lock-guarded connection with ``query``/``execute`` and ``transaction()``.

    Attributes:
        dialect: ``sqlite`` or ``postgresql``.
    """

    def __init__(self, conn: Any, dialect: str) -> None:
        self._conn = conn
        self.dialect = dialect
        self._lock = threading.RLock()
        self._depth = 0

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Run the block atomically; nested use joins the outer transaction.

        Raises:
            StorageError: the database failed.
        """
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._raw("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outer:
                    self._raw("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._raw("COMMIT")

    def _raw(self, sql: str) -> None:
        try:
            self._conn.execute(sql)
        except Exception as exc:
            raise StorageError(f"database: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a SELECT and return every row.

        Raises:
            StorageError: the database failed.
        """
        with self._lock:
            try:
                cur = self._conn.execute(self._sql(sql), tuple(params))
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
        with self._lock:
            try:
                cur = self._conn.execute(self._sql(sql), tuple(params))
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
        with self._lock:
            try:
                if self.dialect == "sqlite":
                    self._conn.executemany(sql, [tuple(r) for r in rows])
                else:
                    with self._conn.cursor() as cur:
                        cur.executemany(self._sql(sql), [tuple(r) for r in rows])
            except Exception as exc:
                raise StorageError(f"database: {exc}") from exc

    def retryable(self, exc: StorageError) -> bool:
        """Whether ``exc`` is a PostgreSQL deadlock or serialisation failure (SQLSTATE 40P01,
        40001), after which the whole transaction may simply run again."""
        return getattr(exc.__cause__, "sqlstate", None) in ("40P01", "40001")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (sqlite3 docs, "Transaction
            # control"); check_same_thread=False because the lock above serialises access.
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL-safe
            conn.execute("PRAGMA busy_timeout=10000")  # ms; the CLI may read while we write
            conn.execute("PRAGMA foreign_keys=ON")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open {path}: {exc}") from exc
        return Database(conn, "sqlite")
    if re.match(r"postgres(ql)?://", url):
        try:
            import psycopg
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "a postgresql:// database needs psycopg: pip install 'edgeserve-toolkit[postgres]'"
            ) from exc
        try:
            conn = psycopg.connect(url, autocommit=True)
        except Exception as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        return Database(conn, "postgresql")
    raise ConfigError(f"database {url!r}: use sqlite:///path or postgresql://...")
