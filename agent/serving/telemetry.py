"""A bounded on-disk telemetry buffer that survives restarts, ``kill -9`` and being offline.

Records are JSON objects appended with increasing integer ids. When the buffer's bytes would
pass ``max_bytes``, the oldest records are dropped first and the drop is counted.
Fleet sync reads :meth:`TelemetryBuffer.pending`, publishes, then
:meth:`TelemetryBuffer.ack`\\ s what the broker accepted.

The file is a journal of JSON lines, each written whole by one ``write`` to a file opened
with ``O_APPEND``:

- ``[id, record]``: a record;
- ``["forget", up_to_id, dropped]``: every record with an id up to ``up_to_id`` is gone
  (acknowledged, or dropped for the bound), and ``dropped`` records were dropped in all.

Records leave only from the oldest end, so the records kept are the record lines after the
last ``forget``: the buffer holds a few counters and one file offset in memory, never the
records. An append that was killed half-way leaves a line without its newline at the end of
the file; it is cut off before the next write (a whole line ends in ``]``, so a cut one is
never valid JSON). Like a database page cache, what ``write`` has handed to the kernel
survives the process being killed; a power loss may lose the last few lines. When the acked
and dropped lines make up most of the file it is rewritten (a new file fsynced, then renamed
over the old one). Serving processes that share the buffer take turns through ``flock`` on
``<path>.lock`` and each reads what the others appended before it acts.

The buffer was kept in SQLite (WAL mode) before: the library's pages cost an agent 1.4-1.5 MB
of idle RSS from its first telemetry window on, more than any module of the agent's own, for a
FIFO that needs none of SQL (``benchmarks/agent.py --rss-only``, two alternated runs each:
71.4 and 71.3 MB after a window with SQLite, 69.9 and 69.9 MB with this). The file is opened
on first use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeserve.errors import ConfigError, StorageError

__all__ = ["TelemetryBuffer"]

log = logging.getLogger(__name__)

_CHUNK = 65_536  # bytes read at a time when scanning the journal
_COMPACT_MIN = 65_536  # a journal smaller than this is never rewritten


class TelemetryBuffer:
    """Bounded, persistent FIFO of telemetry records. Thread-safe, and safe to share between
    processes."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        """Set up the buffer at ``path``; the file is opened or created on first use.

        Args:
            path: the journal file.
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
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._closed = False
        self._reset(None)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot open telemetry buffer {self.path}: {exc}") from exc

    def _reset(self, ino: int | None) -> None:
        """Forget what was read of the journal (a new file, or another process rewrote it)."""
        self._ino = ino
        self._pos = 0  # bytes of the journal read and applied
        self._up_to = 0  # records with an id up to this are gone
        self._last_id = 0
        self._dropped = 0
        self._count = 0  # records kept
        self._bytes = 0  # their JSON bytes
        self._head: int | None = None  # offset of the first kept record's line

    # -- the journal ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """Hold the thread lock and the file lock, with the journal read to its end; yields
        the journal's descriptor.

        Raises:
            StorageError: the file cannot be opened or read, or the buffer was closed.
        """
        with self._lock:
            if self._closed:
                raise StorageError(f"telemetry buffer {self.path} is closed")
            import fcntl

            try:
                if self._lock_fd is None:
                    lock_path = self.path.with_name(self.path.name + ".lock")
                    self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise StorageError(f"cannot open telemetry buffer {self.path}: {exc}") from exc
            try:
                yield self._catch_up()
            except OSError as exc:
                # what we hold may now differ from the file (a disk-full write): read it anew
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                raise StorageError(f"telemetry buffer {self.path}: {exc}") from exc
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _catch_up(self) -> int:
        """Apply what was appended since we last read (by anyone); reopen a rewritten file;
        cut off a line that a killed writer left half-written. Returns the descriptor."""
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            ino = None
        if self._fd is None or ino != self._ino:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as exc:
                raise StorageError(f"cannot open telemetry buffer {self.path}: {exc}") from exc
            self._reset(os.fstat(self._fd).st_ino)
            if os.pread(self._fd, 16, 0) == b"SQLite format 3\x00":
                os.close(self._fd)
                self._fd = None
                raise StorageError(
                    f"telemetry buffer {self.path} is an SQLite file of an earlier edgeserve; "
                    "the buffer is now a journal of JSON lines: move the file away, or set "
                    "[telemetry] path to another file"
                )
        fd = self._fd
        size = os.fstat(fd).st_size
        if size < self._pos:  # shorter than what we read: start over
            self._reset(self._ino)
        for offset, line in self._lines(self._pos, size):
            if not line.endswith(b"\n"):  # a killed writer's last line
                os.ftruncate(fd, offset)
                break
            self._apply(offset, line)
            self._pos = offset + len(line)
        return fd

    def _lines(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """``(offset, line)`` of the journal between two offsets; the last may lack its
        newline."""
        assert self._fd is not None
        pos, rest, size = start, b"", 4096  # most callers want a line or two: start small
        while pos < end:
            chunk = os.pread(self._fd, min(size, end - pos), pos)
            size = min(2 * size, _CHUNK)
            if not chunk:
                break
            pos += len(chunk)
            rest += chunk
            offset = pos - len(rest)
            *whole, rest = rest.split(b"\n")
            for line in whole:
                yield offset, line + b"\n"
                offset += len(line) + 1
        if rest:
            yield pos - len(rest), rest

    def _apply(self, offset: int, line: bytes) -> None:
        record = _record(line)
        if record is not None:
            rid = record[0]
            self._last_id = max(self._last_id, rid)
            if rid > self._up_to:
                self._count += 1
                self._bytes += _body_size(line)
                if self._head is None:
                    self._head = offset
            return
        mark = _mark(line)
        if mark is not None:
            self._dropped = max(self._dropped, mark[1])
            self._forget(mark[0])
        # anything else (a line damaged on disk) is skipped everywhere alike

    def _forget(self, up_to: int) -> None:
        """Move the oldest end past ``up_to`` (the records' lines are read to count them)."""
        if up_to <= self._up_to:
            return
        self._up_to = up_to
        self._last_id = max(self._last_id, up_to)
        head, self._head = self._head, None
        if head is None:
            return
        for offset, line in self._lines(head, self._pos):
            record = _record(line)
            if record is None:
                continue
            if record[0] > up_to:
                self._head = offset
                return
            self._count -= 1
            self._bytes -= _body_size(line)

    def _write(self, fd: int, data: bytes) -> None:
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {self.path} (disk full?)")
        self._pos = os.fstat(fd).st_size  # what we wrote is already applied by the caller

    def _compact(self, fd: int) -> None:
        """Rewrite the journal as its kept records when the forgotten part is most of it.

        A rewrite that fails (a full disk) leaves the journal as it was: it is only retried
        later, and what the caller asked for has already been written."""
        if self._pos < _COMPACT_MIN or self._pos < 2 * self._bytes:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                chunk = bytearray(_forget_line(self._up_to, self._dropped))
                if self._head is not None:
                    for _offset, line in self._lines(self._head, self._pos):
                        if _record(line) is not None:
                            chunk += line
                        if len(chunk) >= _CHUNK:
                            _write_all(out, chunk)
                            chunk.clear()
                _write_all(out, chunk)
                os.fsync(out)
            finally:
                os.close(out)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("telemetry buffer %s: not rewritten (%s), kept as it is", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        os.close(fd)
        self._fd = None
        self._catch_up()  # reopen and read the new file

    # -- the buffer -----------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """Add a record; drop the oldest ones first if the bound would be passed.

        A record larger than ``max_bytes`` on its own is dropped (and counted).

        Raises:
            StorageError: the disk failed.
        """
        body = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)
        size = len(body.encode())
        with self._locked() as fd:
            if size > self.max_bytes:
                self._dropped += 1
                self._write(fd, _forget_line(self._up_to, self._dropped))
                self._compact(fd)
                return
            data = b""
            if self._bytes + size > self.max_bytes:
                up_to, dropped = self._oldest_to_drop(self._bytes + size - self.max_bytes)
                self._dropped += dropped
                self._forget(up_to)
                data = _forget_line(up_to, self._dropped)
            rid = self._last_id + 1
            line = f"[{rid},{body}]\n".encode()
            self._write(fd, data + line)
            self._last_id = rid
            self._count += 1
            self._bytes += size
            if self._head is None:
                self._head = self._pos - len(line)
            if data:  # without fleet sync nothing is acked: drops alone must not grow the file
                self._compact(fd)

    def _oldest_to_drop(self, excess: int) -> tuple[int, int]:
        """The id up to which the oldest records free ``excess`` bytes, and how many."""
        up_to, freed, n = self._up_to, 0, 0
        if self._head is not None:
            for _offset, line in self._lines(self._head, self._pos):
                record = _record(line)
                if record is None:
                    continue
                up_to, freed, n = record[0], freed + _body_size(line), n + 1
                if freed >= excess:
                    break
        return up_to, n

    def pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` oldest unacknowledged records as ``(id, record)``, oldest first."""
        out: list[tuple[int, dict[str, Any]]] = []
        with self._locked():
            if self._head is None or limit <= 0:
                return out
            for _offset, line in self._lines(self._head, self._pos):
                record = _record(line)
                if record is None:
                    continue
                out.append(record)
                if len(out) >= limit:
                    break
        return out

    def ack(self, up_to_id: int) -> None:
        """Forget every record with id <= ``up_to_id`` (they were delivered)."""
        with self._locked() as fd:
            up_to = min(up_to_id, self._last_id)
            if up_to <= self._up_to:
                return
            self._forget(up_to)
            self._write(fd, _forget_line(up_to, self._dropped))
            self._compact(fd)

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer was full, since it was created."""
        with self._locked():
            return self._dropped

    @property
    def size_bytes(self) -> int:
        """Bytes of records currently stored."""
        with self._locked():
            return self._bytes

    def __len__(self) -> int:
        with self._locked():
            return self._count

    def close(self) -> None:
        """Close the file (if it was opened); the buffer cannot be used afterwards."""
        with self._lock:
            self._closed = True
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = None


def _forget_line(up_to: int, dropped: int) -> bytes:
    return f'["forget",{up_to},{dropped}]\n'.encode()


def _record(line: bytes) -> tuple[int, dict[str, Any]] | None:
    """``(id, record)`` of a record line; None for any other line."""
    if not line.startswith(b"[") or not line[1:2].isdigit():
        return None
    try:
        rid, record = json.loads(line)
    except ValueError:
        return None
    if type(rid) is not int or not isinstance(record, dict):
        return None
    return rid, record


def _mark(line: bytes) -> tuple[int, int] | None:
    """``(up_to_id, dropped)`` of a ``forget`` line; None for any other line."""
    if not line.startswith(b'["forget",'):
        return None
    try:
        _word, up_to, dropped = json.loads(line)
    except ValueError:
        return None
    if type(up_to) is not int or type(dropped) is not int:
        return None
    return up_to, dropped


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _body_size(line: bytes) -> int:
    """The record's JSON bytes in ``[id,record]\\n``."""
    return len(line) - line.find(b",") - 3
