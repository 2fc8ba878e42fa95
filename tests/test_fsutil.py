"""Durable writes: the new content or the old, never a torn file or a stray temp file."""

from __future__ import annotations

import stat

import pytest

from edgeserve.errors import StorageError
from edgeserve.fsutil import write_atomic


def test_write_atomic_replaces_content_with_mode(tmp_path) -> None:
    target = tmp_path / "sub" / "secret.key"
    write_atomic(target, b"old", 0o600)
    write_atomic(target, b"new", 0o600, sync_dir=True)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["secret.key"]


def test_write_atomic_onto_a_directory_fails_cleanly(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_bytes(b"x")
    with pytest.raises(StorageError, match="cannot write"):
        write_atomic(tmp_path / "d", b"new")
    assert (tmp_path / "d" / "keep").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
