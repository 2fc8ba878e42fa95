"""What every group of queries shares: the database handle, and ``IN (...)`` in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .db import Database

__all__ = ["CHUNK", "Queries", "chunks"]

# ids bound per ``IN (...)`` list: far below SQLite's and PostgreSQL's parameter limits
CHUNK = 500


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(n: int) -> str:
    """``?, ?, ...`` for ``n`` parameters."""
    return ", ".join("?" * n)


class Queries:
    """Base of the query groups the :class:`~.Store` facade is made of."""

    db: Database

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block atomically; nested use joins the outer transaction.

        Raises:
            StorageError: the database failed.
        """
        with self.db.transaction():
            yield
