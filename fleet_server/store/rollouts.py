"""Queries on ``rollouts``, ``rollout_devices`` (each device's progress in a rollout) and
``device_failures`` (every failure a device reported, kept after a revert)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .base import Queries, chunks, placeholders
from .records import RolloutRow, Row, failure

__all__ = ["RolloutQueries"]

# running or paused: the statuses that hold a model (rollout/lifecycle.py draws them all)
ACTIVE_STATUSES = ("running", "paused")

_ROLLOUT_COLS = (
    "id, model, version, spec, status, phase_index, phase_started, reason, gates, created, updated"
)


def _rollout(row: Row) -> RolloutRow:
    return RolloutRow(
        id=int(row[0]),
        model=row[1],
        version=int(row[2]),
        spec=json.loads(row[3]),
        status=row[4],
        phase_index=int(row[5]),
        phase_started=row[6],
        reason=row[7],
        gates=json.loads(row[8]),
        created=row[9],
        updated=row[10],
    )


class RolloutQueries(Queries):
    """Rollouts, their devices and the failures those devices reported."""

    # -- rollouts ---------------------------------------------------------------------------

    def rollout(self, rollout: int) -> RolloutRow | None:
        """One rollout, or None."""
        row = self.db.one(f"SELECT {_ROLLOUT_COLS} FROM rollouts WHERE id = ?", (rollout,))
        return None if row is None else _rollout(row)

    def rollouts(self, statuses: Sequence[str] | None = None) -> list[RolloutRow]:
        """Every rollout (or those in ``statuses``), newest first."""
        where, params = "", ()
        if statuses is not None:
            where, params = f"WHERE status IN ({placeholders(len(statuses))}) ", tuple(statuses)
        rows = self.db.query(
            f"SELECT {_ROLLOUT_COLS} FROM rollouts {where}ORDER BY id DESC", params
        )
        return [_rollout(r) for r in rows]

    def active_rollout_of(self, model: str) -> int | None:
        """The id of the running or paused rollout of ``model``, if any."""
        row = self.db.one(
            "SELECT id FROM rollouts WHERE model = ? AND status IN (?, ?)",
            (model, *ACTIVE_STATUSES),
        )
        return None if row is None else int(row[0])

    def add_rollout(self, model: str, version: int, spec: Mapping[str, Any], now: float) -> int:
        """Insert a running rollout at phase 0; return its id (call inside a transaction)."""
        row = self.db.one("SELECT MAX(id) FROM rollouts")
        rid = int(row[0] or 0) + 1 if row else 1
        self.db.execute(
            "INSERT INTO rollouts (id, model, version, spec, status, phase_index, phase_started,"
            " created, updated) VALUES (?, ?, ?, ?, 'running', 0, NULL, ?, ?)",
            (rid, model, version, json.dumps(dict(spec)), now, now),
        )
        return rid

    def set_rollout_status(
        self, rollout: int, status: str, reason: str, updated: float | None = None
    ) -> None:
        """Set a rollout's status and the reason for it (and ``updated`` when given)."""
        if updated is None:
            self.db.execute(
                "UPDATE rollouts SET status = ?, reason = ? WHERE id = ?", (status, reason, rollout)
            )
        else:
            self.db.execute(
                "UPDATE rollouts SET status = ?, reason = ?, updated = ? WHERE id = ?",
                (status, reason, updated, rollout),
            )

    def set_phase_settled(self, rollout: int, at: float) -> None:
        """Record when the current phase settled (its soak starts)."""
        self.db.execute("UPDATE rollouts SET phase_started = ? WHERE id = ?", (at, rollout))

    def set_phase(self, rollout: int, index: int) -> None:
        """Move a rollout to phase ``index`` (not yet settled)."""
        self.db.execute(
            "UPDATE rollouts SET phase_index = ?, phase_started = NULL WHERE id = ?",
            (index, rollout),
        )

    def set_gates(self, rollout: int, gates: Mapping[str, Any], now: float) -> None:
        """Record the gates last judged and when."""
        self.db.execute(
            "UPDATE rollouts SET gates = ?, updated = ? WHERE id = ?",
            (json.dumps(dict(gates)), now, rollout),
        )

    def active_rollout_progress(self) -> list[dict[str, Any]]:
        """Running and paused rollouts: id, model, version, status, phase, devices by state."""
        return [
            {
                "id": r.id,
                "model": r.model,
                "version": r.version,
                "status": r.status,
                "phase_index": r.phase_index,
                "phase_percent": r.phase_percent,
                "counts": self.rollout_state_counts(r.id),
            }
            for r in reversed(self.rollouts(ACTIVE_STATUSES))
        ]

    # -- rollout devices --------------------------------------------------------------------

    def rollout_members(self, rollout: int) -> dict[str, int | None]:
        """``device -> baseline version`` (None: none) of every device in the rollout."""
        rows = self.db.query(
            "SELECT device, baseline FROM rollout_devices WHERE rollout = ?", (rollout,)
        )
        return {r[0]: None if r[1] is None else int(r[1]) for r in rows}

    def add_rollout_devices(
        self, rollout: int, rows: Iterable[tuple[str, float, int | None]], state: str, now: float
    ) -> None:
        """Enroll ``(device, bucket, baseline)`` rows in ``state``."""
        self.db.executemany(
            "INSERT INTO rollout_devices VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(rollout, d, b, base, None, state, "", now) for d, b, base in rows],
        )

    def rollout_in_state_below(
        self, rollout: int, state: str, percent: float
    ) -> list[tuple[str, float, str, float | None]]:
        """``(device, bucket, state, assigned)`` of the devices in ``state`` with a bucket
        below ``percent``, by bucket."""
        rows = self.db.query(
            "SELECT device, bucket, state, assigned FROM rollout_devices WHERE rollout = ? "
            "AND state = ? AND bucket < ? ORDER BY bucket",
            (rollout, state, percent),
        )
        return [(r[0], float(r[1]), r[2], r[3]) for r in rows]

    def rollout_assigned_before(
        self, rollout: int, state: str, before: float
    ) -> list[tuple[str, float, str, float | None]]:
        """``(device, bucket, state, assigned)`` of the devices in ``state`` assigned before
        ``before``, by device id."""
        rows = self.db.query(
            "SELECT device, bucket, state, assigned FROM rollout_devices WHERE rollout = ? "
            "AND state = ? AND assigned < ? ORDER BY device",
            (rollout, state, before),
        )
        return [(r[0], float(r[1]), r[2], r[3]) for r in rows]

    def rollout_unsettled(self, rollout: int, percent: float, finished: Sequence[str]) -> int:
        """How many devices with a bucket below ``percent`` are in none of ``finished``."""
        row = self.db.one(
            "SELECT COUNT(*) FROM rollout_devices WHERE rollout = ? AND bucket < ? AND "
            f"state NOT IN ({placeholders(len(finished))})",
            (rollout, percent, *finished),
        )
        return int(row[0]) if row else 0

    def rollout_devices(self, rollout: int) -> list[tuple[str, float, str, str]]:
        """``(device, bucket, state, detail)`` of every device, by device id."""
        rows = self.db.query(
            "SELECT device, bucket, state, detail FROM rollout_devices WHERE rollout = ? "
            "ORDER BY device",
            (rollout,),
        )
        return [(r[0], float(r[1]), r[2], r[3]) for r in rows]

    def rollout_state_counts(self, rollout: int) -> dict[str, int]:
        """``state -> number of devices`` in the rollout."""
        rows = self.db.query(
            "SELECT state, COUNT(*) FROM rollout_devices WHERE rollout = ? GROUP BY state",
            (rollout,),
        )
        return {r[0]: int(r[1]) for r in rows}

    def rollout_state_details(self, rollout: int) -> list[tuple[str, str, int]]:
        """``(state, detail, number of devices)`` in the rollout, counted by the database."""
        rows = self.db.query(
            "SELECT state, detail, COUNT(*) FROM rollout_devices WHERE rollout = ? "
            "GROUP BY state, detail",
            (rollout,),
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    def rollout_devices_below(self, rollout: int, percent: float) -> int:
        """How many of the rollout's devices have a bucket below ``percent``."""
        row = self.db.one(
            "SELECT COUNT(*) FROM rollout_devices WHERE rollout = ? AND bucket < ?",
            (rollout, percent),
        )
        return int(row[0]) if row else 0

    def rollout_devices_in(self, rollout: int, states: Sequence[str]) -> list[str]:
        """The devices of the rollout in one of ``states``."""
        rows = self.db.query(
            f"SELECT device FROM rollout_devices WHERE rollout = ? AND state IN "
            f"({placeholders(len(states))})",
            (rollout, *states),
        )
        return [r[0] for r in rows]

    def rollout_device_states(
        self, rollout: int, devices: Sequence[str], states: Sequence[str]
    ) -> list[tuple[str, str, str]]:
        """``(device, state, detail)`` of those of ``devices`` in the rollout that are in one
        of ``states`` (only the rows asked for: a report batch, not the whole rollout)."""
        out: list[tuple[str, str, str]] = []
        for part in chunks(sorted(set(devices))):
            rows = self.db.query(
                "SELECT device, state, detail FROM rollout_devices WHERE rollout = ? AND "
                f"state IN ({placeholders(len(states))}) AND "
                f"device IN ({placeholders(len(part))})",
                (rollout, *states, *part),
            )
            out.extend((r[0], r[1], r[2]) for r in rows)
        return out

    def set_rollout_devices(
        self,
        rollout: int,
        devices: Iterable[str],
        state: str,
        detail: str,
        now: float,
        assigned: bool = False,
    ) -> None:
        """Move ``devices`` to ``state`` (and with ``assigned``, record when they were)."""
        extra = ", assigned = ?" if assigned else ""
        params: list[Any] = [state, detail, now] + ([now] if assigned else [])
        self.db.executemany(
            f"UPDATE rollout_devices SET state = ?, detail = ?, updated = ?{extra} "
            "WHERE rollout = ? AND device = ?",
            # in one order everywhere, so that two transactions updating the same rows (the
            # controller's and the ingest thread's, PostgreSQL) cannot deadlock
            [(*params, rollout, d) for d in sorted(devices)],
        )

    def update_rollout_device_states(
        self, rollout: int, rows: Sequence[tuple[str, str, str]], now: float
    ) -> None:
        """Record ``(device, state, detail)`` rows."""
        self.db.executemany(
            "UPDATE rollout_devices SET state = ?, detail = ?, updated = ? "
            "WHERE rollout = ? AND device = ?",
            [(state, detail, now, rollout, dev) for dev, state, detail in sorted(rows)],
        )

    def reset_rollout_devices(self, rollout: int, states: Sequence[str], to: str) -> None:
        """Move the devices in ``states`` back to ``to``, unassigned (they are assigned again)."""
        self.db.execute(
            "UPDATE rollout_devices SET state = ?, assigned = NULL WHERE rollout = ? AND "
            f"state IN ({placeholders(len(states))})",
            (to, rollout, *states),
        )

    def device_installs(self, device: str, limit: int = 50) -> list[dict[str, Any]]:
        """The rollouts ``device`` took part in, newest first: what it was asked to install,
        from which baseline, and how it ended (its ``rollout_devices`` row)."""
        rows = self.db.query(
            "SELECT r.id, r.model, r.version, d.baseline, d.state, d.detail, d.updated "
            "FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout "
            "WHERE d.device = ? ORDER BY r.id DESC LIMIT ?",
            (device, limit),
        )
        return [
            {
                "rollout": int(r[0]),
                "model": r[1],
                "version": int(r[2]),
                "baseline": None if r[3] is None else int(r[3]),
                "state": r[4],
                "detail": r[5],
                "updated": r[6],
            }
            for r in rows
        ]

    # -- device failures --------------------------------------------------------------------

    def add_device_failure(
        self,
        rollout: int,
        device: str,
        model: str,
        version: int,
        state: str,
        reason_code: str,
        error: str,
        phase: int,
    ) -> None:
        """Keep one device failure of a rollout (kept after the device is reverted)."""
        self.db.execute(
            "INSERT INTO device_failures (rollout, device, model, version, state, reason_code, "
            "error, phase, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rollout, device, model, version, state, reason_code, error[:500], phase, time.time()),
        )

    def device_failures(self, rollout: int) -> list[dict[str, Any]]:
        """Every failure recorded for ``rollout``, oldest first."""
        rows = self.db.query(
            "SELECT device, model, version, state, reason_code, error, phase, ts "
            "FROM device_failures WHERE rollout = ? ORDER BY id",
            (rollout,),
        )
        return [{"device": r[0], **failure(r[1:])} for r in rows]

    def device_failures_of(self, device: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest failures ``device`` reported, in any rollout, newest first."""
        rows = self.db.query(
            "SELECT rollout, model, version, state, reason_code, error, phase, ts "
            "FROM device_failures WHERE device = ? ORDER BY id DESC LIMIT ?",
            (device, limit),
        )
        return [{"rollout": int(r[0]), **failure(r[1:])} for r in rows]
