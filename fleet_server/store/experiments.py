"""Queries on ``experiments``: two versions of a model split across or on devices."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .base import Queries
from .records import ExperimentRow, Row

__all__ = ["ExperimentQueries"]

_EXPERIMENT_COLS = "id, model, spec, status, created, ended, rollout"


def _experiment(row: Row) -> ExperimentRow:
    return ExperimentRow(
        id=int(row[0]),
        model=row[1],
        spec=json.loads(row[2]),
        status=row[3],
        created=row[4],
        ended=row[5],
        rollout=None if row[6] is None else int(row[6]),
    )


class ExperimentQueries(Queries):
    """Experiments: start, read, end, link to the rollout of the winner."""

    def next_experiment_id(self) -> int:
        """The id the next experiment gets (call inside the transaction that adds it)."""
        row = self.db.one("SELECT MAX(id) FROM experiments")
        return int(row[0] or 0) + 1 if row else 1

    def add_experiment(self, eid: int, model: str, spec: Mapping[str, Any]) -> None:
        """Insert a running experiment with id ``eid``."""
        self.db.execute(
            "INSERT INTO experiments (id, model, spec, status, created) "
            "VALUES (?, ?, ?, 'running', ?)",
            (eid, model, json.dumps(dict(spec)), time.time()),
        )

    def experiment_row(self, eid: int) -> ExperimentRow | None:
        """One experiment, or None."""
        row = self.db.one(f"SELECT {_EXPERIMENT_COLS} FROM experiments WHERE id = ?", (eid,))
        return None if row is None else _experiment(row)

    def experiment_ids(self) -> list[int]:
        """Every experiment's id, newest first."""
        return [int(r[0]) for r in self.db.query("SELECT id FROM experiments ORDER BY id DESC")]

    def running_experiment_of(self, model: str) -> int | None:
        """The id of the running experiment of ``model``, if any."""
        row = self.db.one(
            "SELECT id FROM experiments WHERE model = ? AND status = 'running'", (model,)
        )
        return None if row is None else int(row[0])

    def end_experiment(self, eid: int, status: str) -> None:
        """Mark an experiment ended now with ``status`` (``stopped``, ``promoted``)."""
        self.db.execute(
            "UPDATE experiments SET status = ?, ended = ? WHERE id = ?", (status, time.time(), eid)
        )

    def set_experiment_rollout(self, eid: int, rollout: int) -> None:
        """Link an experiment to the rollout of its winner."""
        self.db.execute("UPDATE experiments SET rollout = ? WHERE id = ?", (rollout, eid))
