"""A bounded on-disk telemetry buffer that survives restarts, ``kill -9`` and being offline.

Records are JSON objects appended with increasing integer ids. When the buffer's bytes would
pass ``max_bytes``, the oldest records are dropped first and the drop is counted.
Fleet sync reads :meth:`TelemetryBuffer.pending`, publishes, then
:meth:`TelemetryBuffer.ack`\\ s what the broker accepted.

Storage is SQLite from the standard library (no server) in WAL mode with ``synchronous=NORMAL``:
a committed append survives the process being killed (https://www.sqlite.org/wal.html,
"durability"); only a power loss may lose the last few commits.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from edgeserve.errors import ConfigError, StorageError

__all__ = ["TelemetryBuffer"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('dropped', 0);
"""


class TelemetryBuffer:
    """Bounded, persistent FIFO of telemetry records. Thread-safe."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        """Open or create the buffer at ``path``.

        Args:
            path: the SQLite file.
            max_bytes: bound on the stored records' JSON bytes.

        Raises:
            ConfigError: ``max_bytes`` is not positive.
            StorageError: the file cannot be opened.
        """
        if max_bytes < 1:
            raise ConfigError("telemetry max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM records").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open telemetry buffer {self.path}: {exc}") from exc
        self._bytes = int(row[0])

    def append(self, record: dict[str, Any]) -> None:
        """Add a record; drop the oldest ones first if the bound would be passed.

        A record larger than ``max_bytes`` on its own is dropped (and counted).

        Raises:
            StorageError: the disk failed.
        """
        body = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)
        size = len(body)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                # Re-read the size under the write lock: with several serving processes on
                # one buffer, the others' appends and fleet sync's acks change it too.
                row = self._db.execute(
                    "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM records"
                ).fetchone()
                self._bytes = int(row[0])
                dropped = 0
                if size > self.max_bytes:
                    dropped = 1
                else:
                    while self._bytes + size > self.max_bytes:
                        row = self._db.execute(
                            "SELECT id, LENGTH(body) FROM records ORDER BY id LIMIT 1"
                        ).fetchone()
                        if row is None:
                            break
                        self._db.execute("DELETE FROM records WHERE id = ?", (row[0],))
                        self._bytes -= row[1]
                        dropped += 1
                    self._db.execute("INSERT INTO records (body) VALUES (?)", (body,))
                    self._bytes += size
                if dropped:
                    self._db.execute(
                        "UPDATE meta SET value = value + ? WHERE key = 'dropped'", (dropped,)
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(f"telemetry buffer {self.path}: {exc}") from exc

    def pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` oldest unacknowledged records as ``(id, record)``, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, body FROM records ORDER BY id LIMIT ?", (max(0, limit),)
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"telemetry buffer {self.path}: {exc}") from exc
        return [(int(i), json.loads(body)) for i, body in rows]

    def ack(self, up_to_id: int) -> None:
        """Forget every record with id <= ``up_to_id`` (they were delivered)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM records WHERE id <= ?",
                    (up_to_id,),
                ).fetchone()
                self._db.execute("DELETE FROM records WHERE id <= ?", (up_to_id,))
                self._db.execute("COMMIT")
                self._bytes -= int(row[0])
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(f"telemetry buffer {self.path}: {exc}") from exc

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer was full, since it was created."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return int(row[0])

    @property
    def size_bytes(self) -> int:
        """Bytes of records currently stored."""
        return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
