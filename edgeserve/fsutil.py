"""Durable file writes: a crash leaves either the old file or the new one, never a torn one.

The pattern: write a temp file in the same directory, fsync it, ``os.replace`` it over the
target (atomic on POSIX within one filesystem), and, where the rename itself must survive a
power cut, fsync the directory.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from edgeserve.errors import StorageError

__all__ = ["fsync_path", "write_atomic"]


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, sync_dir: bool = False) -> Path:
    """Replace ``path`` with ``data`` atomically and durably.

    Args:
        path: the file to write; its directory is created if missing.
        data: the whole new content.
        mode: permission bits of the new file (``0o600`` for secrets; the umask may only
            narrow them).
        sync_dir: also fsync the directory, so that the rename itself is on disk.

    Returns:
        ``path``.

    Raises:
        StorageError: the file cannot be written (disk full, read-only, permissions).
    """
    # pid and thread in the temp name: two writers of the same file never share a temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        if sync_dir:
            fsync_path(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path (a directory's fsync makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
