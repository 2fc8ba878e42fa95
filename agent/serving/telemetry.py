"""A bounded on-disk telemetry buffer that survives restarts, ``kill -9`` and being offline.

Records are JSON objects appended with increasing integer ids. When the buffer's bytes would
pass ``max_bytes``, the oldest records are dropped first and the drop is counted.
Fleet sync reads :meth:`TelemetryBuffer.pending`, publishes, then
:meth:`TelemetryBuffer.ack`\\ s what the broker accepted.

Storage is SQLite from the standard library (no server) in WAL mode with ``synchronous=NORMAL``:
a committed append survives the process being killed (https://www.sqlite.org/wal.html,
"durability"); only a power loss may lose the last few commits.

The file is opened (and ``sqlite3`` imported) on first use, not when the buffer is created: an
agent that has served nothing yet, and has no fleet sync to read the buffer, does not map
SQLite's library (1.5 MB of its idle RSS, ``benchmarks/lean_start.py``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeserve.errors import ConfigError, StorageError

if TYPE_CHECKING:
    import sqlite3

__all__ = ["TelemetryBuffer"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('dropped', 0);
"""


class TelemetryBuffer:
    """Bounded, persistent FIFO of telemetry records. Thread-safe."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        """Set up the buffer at ``path``; the file is opened or created on first use.

        Args:
            path: the SQLite file.
            max_bytes: bound on the stored records' JSON bytes.

        Raises:
            ConfigError: ``max_bytes`` is not positive.
            StorageError: the file's directory cannot be created.
        """
        if max_bytes < 1:
            raise ConfigError("telemetry max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._bytes = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot open telemetry buffer {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        """The open connection, opening the file the first time. Call with the lock held.

        Raises:
            StorageError: the file cannot be opened, or the buffer was closed.
        """
        if self._db is not None:
            return self._db
        if self._closed:
            raise StorageError(f"telemetry buffer {self.path} is closed")
        import sqlite3

        try:
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open telemetry buffer {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM records").fetchone()
        except (OSError, sqlite3.Error) as exc:
            db.close()
            raise StorageError(f"cannot open telemetry buffer {self.path}: {exc}") from exc
        self._bytes = int(row[0])
        self._db = db
        return db

    def append(self, record: dict[str, Any]) -> None:
        """Add a record; drop the oldest ones first if the bound would be passed.

        A record larger than ``max_bytes`` on its own is dropped (and counted).

        Raises:
            StorageError: the disk failed.
        """
        body = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)
        size = len(body)
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                # Re-read the size under the write lock: with several serving processes on
                # one buffer, the others' appends and fleet sync's acks change it too.
                row = db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM records").fetchone()
                self._bytes = int(row[0])
                dropped = 0
                if size > self.max_bytes:
                    dropped = 1
                else:
                    while self._bytes + size > self.max_bytes:
                        row = db.execute(
                            "SELECT id, LENGTH(body) FROM records ORDER BY id LIMIT 1"
                        ).fetchone()
                        if row is None:
                            break
                        db.execute("DELETE FROM records WHERE id = ?", (row[0],))
                        self._bytes -= row[1]
                        dropped += 1
                    db.execute("INSERT INTO records (body) VALUES (?)", (body,))
                    self._bytes += size
                if dropped:
                    db.execute(
                        "UPDATE meta SET value = value + ? WHERE key = 'dropped'", (dropped,)
                    )
                db.execute("COMMIT")
            except _sqlite_error() as exc:
                _rollback(db)
                raise StorageError(f"telemetry buffer {self.path}: {exc}") from exc

    def pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` oldest unacknowledged records as ``(id, record)``, oldest first."""
        with self._lock:
            db = self._connect()
            try:
                rows = db.execute(
                    "SELECT id, body FROM records ORDER BY id LIMIT ?", (max(0, limit),)
                ).fetchall()
            except _sqlite_error() as exc:
                raise StorageError(f"telemetry buffer {self.path}: {exc}") from exc
        return [(int(i), json.loads(body)) for i, body in rows]

    def ack(self, up_to_id: int) -> None:
        """Forget every record with id <= ``up_to_id`` (they were delivered)."""
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute(
                    "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM records WHERE id <= ?",
                    (up_to_id,),
                ).fetchone()
                db.execute("DELETE FROM records WHERE id <= ?", (up_to_id,))
                db.execute("COMMIT")
                self._bytes -= int(row[0])
            except _sqlite_error() as exc:
                _rollback(db)
                raise StorageError(f"telemetry buffer {self.path}: {exc}") from exc

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer was full, since it was created."""
        with self._lock:
            row = self._connect().execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return int(row[0])

    @property
    def size_bytes(self) -> int:
        """Bytes of records currently stored."""
        with self._lock:
            self._connect()
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        """Close the file (if it was opened); the buffer cannot be used afterwards."""
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None


def _sqlite_error() -> type[Exception]:
    """``sqlite3.Error``, for ``except`` clauses: imported by :meth:`TelemetryBuffer._connect`
    before any statement runs, so this is a lookup, not an import."""
    import sqlite3

    return sqlite3.Error


def _rollback(db: sqlite3.Connection) -> None:
    with contextlib.suppress(_sqlite_error()):
        db.execute("ROLLBACK")
