"""Queries on ``devices`` and ``device_targets``: registration, presence, reported state, what
each device should run and the ``seq`` of its desired state."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgeserve.errors import ConflictError, NotFoundError

from .base import Queries, chunks, placeholders
from .records import DeviceRow, Row, Target, to_json

__all__ = ["DeviceQueries"]

_DEVICE_COLS = "id, tags, presence, reported, reported_at, desired_seq, created"


def _device(row: Row) -> DeviceRow:
    return DeviceRow(
        id=row[0],
        tags=json.loads(row[1]),
        presence=row[2],
        reported=json.loads(row[3]) if row[3] else {},
        reported_at=row[4],
        desired_seq=int(row[5]),
        created=row[6],
    )


class DeviceQueries(Queries):
    """Devices and their desired targets."""

    def add_device(self, device: str, tags: Mapping[str, str], secret_hash: str) -> None:
        """Register a device.

        Raises:
            ConflictError: the id is taken.
        """
        with self.db.transaction():
            if self.db.one("SELECT 1 FROM devices WHERE id = ?", (device,)):
                raise ConflictError(f"device {device!r} already exists")
            self.db.execute(
                "INSERT INTO devices (id, tags, secret_hash, created) VALUES (?, ?, ?, ?)",
                (device, to_json(dict(tags)), secret_hash, time.time()),
            )

    def devices(self) -> list[DeviceRow]:
        """Every device, by id."""
        rows = self.db.query(f"SELECT {_DEVICE_COLS} FROM devices ORDER BY id")
        return [_device(r) for r in rows]

    def devices_outside_rollout(self, rollout: int) -> list[DeviceRow]:
        """Every device not enrolled in ``rollout`` (yet), by id."""
        rows = self.db.query(
            f"SELECT {_DEVICE_COLS} FROM devices WHERE id NOT IN "
            "(SELECT device FROM rollout_devices WHERE rollout = ?) ORDER BY id",
            (rollout,),
        )
        return [_device(r) for r in rows]

    def devices_in(self, ids: Sequence[str]) -> list[DeviceRow]:
        """The devices among ``ids`` (unknown ids skipped), by id."""
        out: list[DeviceRow] = []
        for part in chunks(sorted(set(ids))):
            rows = self.db.query(
                f"SELECT {_DEVICE_COLS} FROM devices WHERE id IN ({placeholders(len(part))}) "
                "ORDER BY id",
                part,
            )
            out.extend(_device(r) for r in rows)
        return out

    def device(self, device: str) -> DeviceRow:
        """One device.

        Raises:
            NotFoundError: unknown device.
        """
        row = self.db.one(f"SELECT {_DEVICE_COLS} FROM devices WHERE id = ?", (device,))
        if row is None:
            raise NotFoundError(f"no device {device!r}")
        return _device(row)

    def known_devices(self) -> set[str]:
        """Ids of every registered device."""
        return {r[0] for r in self.db.query("SELECT id FROM devices")}

    def device_count(self) -> int:
        """How many devices are registered (counted by the database)."""
        row = self.db.one("SELECT COUNT(*) FROM devices")
        return int(row[0]) if row else 0

    def known_among(self, ids: Sequence[str]) -> set[str]:
        """The registered devices among ``ids`` (another replica may have added them)."""
        found: set[str] = set()
        for part in chunks(sorted(set(ids))):
            rows = self.db.query(
                f"SELECT id FROM devices WHERE id IN ({placeholders(len(part))})", part
            )
            found.update(r[0] for r in rows)
        return found

    def credential_hashes(self) -> list[tuple[str, str]]:
        """``(device id, mosquitto password hash)`` for every device."""
        return [(r[0], r[1]) for r in self.db.query("SELECT id, secret_hash FROM devices")]

    def add_server_account(self, username: str, secret_hash: str) -> None:
        """Record (or refresh) the broker account of a fleet-server replica. On SQLite (one
        machine, one server) it becomes the only one, so a renamed account does not linger."""
        with self.db.transaction():
            if self.db.dialect == "sqlite":
                self.db.execute("DELETE FROM server_accounts WHERE username <> ?", (username,))
            self.db.execute(
                "INSERT INTO server_accounts (username, secret_hash, seen) VALUES (?, ?, ?) "
                "ON CONFLICT (username) DO UPDATE SET secret_hash = excluded.secret_hash, "
                "seen = excluded.seen",
                (username, secret_hash, time.time()),
            )

    def server_accounts(self) -> list[tuple[str, str]]:
        """``(username, mosquitto password hash)`` of every replica's broker account."""
        rows = self.db.query("SELECT username, secret_hash FROM server_accounts ORDER BY username")
        return [(r[0], r[1]) for r in rows]

    def presence_counts(self) -> dict[str, int]:
        """``presence -> number of devices`` (online, offline, unknown)."""
        return {
            r[0]: int(r[1])
            for r in self.db.query("SELECT presence, COUNT(*) FROM devices GROUP BY presence")
        }

    def reported_state_counts(self) -> dict[tuple[str, str], int]:
        """``(model, install state) -> number of devices`` from the last reports."""
        counts: dict[tuple[str, str], int] = {}
        for (doc,) in self.db.query("SELECT reported FROM devices WHERE reported IS NOT NULL"):
            for model, status in (json.loads(doc).get("models") or {}).items():
                key = (model, str((status or {}).get("state")))
                counts[key] = counts.get(key, 0) + 1
        return counts

    def set_presence(self, rows: Sequence[tuple[str, str, float]]) -> None:
        """Record ``(device, online|offline, ts)`` rows."""
        self.db.executemany(
            "UPDATE devices SET presence = ?, presence_at = ? WHERE id = ?",
            [(p, ts, d) for d, p, ts in rows],
        )

    def set_reported(
        self,
        rows: Sequence[tuple[str, Mapping[str, Any], float]],
        newer: Callable[[Mapping[str, Any], Mapping[str, Any]], bool],
    ) -> list[tuple[str, Mapping[str, Any]]]:
        """Record each device's reported document unless the stored one is newer; return the
        ``(device, document)`` pairs recorded.

        Replicas consuming through a shared subscription receive one device's reports on
        different connections, so they can arrive out of order: ``newer(new, stored)`` decides.
        Must run inside a transaction: on PostgreSQL the devices' rows stay locked (in id order,
        so concurrent batches never deadlock on them) until it commits, which keeps whatever
        the caller derives from the recorded documents in step with them.
        """
        wanted = {d: (doc, ts) for d, doc, ts in rows}
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
        stored: dict[str, Mapping[str, Any]] = {}
        for part in chunks(sorted(wanted)):
            for device, doc in self.db.query(
                f"SELECT id, reported FROM devices WHERE id IN ({placeholders(len(part))}) "
                f"ORDER BY id{lock}",
                part,
            ):
                stored[device] = json.loads(doc) if doc else {}
        accepted = [
            (d, doc)
            for d, (doc, _ts) in sorted(wanted.items())
            if d in stored and (not stored[d] or newer(doc, stored[d]))
        ]
        self.db.executemany(
            "UPDATE devices SET reported = ?, reported_at = ? WHERE id = ?",
            [(to_json(doc), wanted[d][1], d) for d, doc in accepted],
        )
        return accepted

    # -- desired state ----------------------------------------------------------------------

    def targets(self, device: str) -> list[Target]:
        """What ``device`` should run, per model."""
        return self._targets_of([device]).get(device, [])

    def _targets_of(self, devices: Sequence[str]) -> dict[str, list[Target]]:
        """``device -> targets`` (per model) for at most one chunk of ``devices``."""
        rows = self.db.query(
            "SELECT device, model, version, allow_downgrade, split, experiment FROM "
            f"device_targets WHERE device IN ({placeholders(len(devices))}) ORDER BY device, model",
            devices,
        )
        out: dict[str, list[Target]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(
                Target(r[1], int(r[2]), bool(r[3]), json.loads(r[4]) if r[4] else None, r[5])
            )
        return out

    def target_versions(self, model: str) -> dict[str, int]:
        """``device -> version`` currently desired for ``model``."""
        rows = self.db.query("SELECT device, version FROM device_targets WHERE model = ?", (model,))
        return {r[0]: int(r[1]) for r in rows}

    def targeted_devices(self) -> set[str]:
        """Every device with at least one target."""
        return {r[0] for r in self.db.query("SELECT DISTINCT device FROM device_targets")}

    def set_targets(self, model: str, rows: Sequence[tuple[str, Target | None]]) -> None:
        """Set (or with None, remove) what each device of ``(device, target)`` should run for
        ``model``: a delete per chunk of devices and one batch of inserts (two statements per
        device made assigning a 100,000-device phase on PostgreSQL 200,000 round trips)."""
        ids = sorted({d for d, _ in rows})
        for part in chunks(ids):
            self.db.execute(
                f"DELETE FROM device_targets WHERE model = ? AND device IN "
                f"({placeholders(len(part))})",
                (model, *part),
            )
        latest = dict(rows)  # the last target given for a device wins
        self.db.executemany(
            "INSERT INTO device_targets VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    device,
                    model,
                    t.version,
                    int(t.allow_downgrade),
                    to_json(t.split) if t.split else None,
                    t.experiment,
                )
                for device, t in sorted(latest.items())
                if t is not None
            ],
        )

    def next_desired(
        self, devices: Sequence[str], expires: float
    ) -> dict[str, tuple[int, list[Target]]]:
        """The next ``seq`` of each device and its targets, read together: the ``seq`` update
        locks the devices' rows, so of two replicas publishing the same device, the one with
        the higher ``seq`` read the targets last. One transaction per chunk of devices (one per
        device made publishing 100,000 documents on PostgreSQL a round trip five times each).
        Unknown devices are left out.
        """
        out: dict[str, tuple[int, list[Target]]] = {}
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
        for part in chunks(sorted(set(devices))):
            marks = placeholders(len(part))
            with self.db.transaction():
                if lock:  # the rows in id order first, as set_reported takes them: no deadlock
                    self.db.query(
                        f"SELECT id FROM devices WHERE id IN ({marks}) ORDER BY id{lock}", part
                    )
                self.db.execute(
                    "UPDATE devices SET desired_seq = desired_seq + 1, desired_expires = ? "
                    f"WHERE id IN ({marks})",
                    (expires, *part),
                )
                seqs = self.db.query(
                    f"SELECT id, desired_seq FROM devices WHERE id IN ({marks})", part
                )
                targets = self._targets_of(part)
            for device, seq in seqs:
                out[device] = (int(seq), targets.get(device, []))
        return out

    def expiring(self, before: float) -> list[str]:
        """Devices whose published desired state expires before ``before``."""
        rows = self.db.query(
            "SELECT id FROM devices WHERE desired_seq > 0 AND desired_expires < ?", (before,)
        )
        return [r[0] for r in rows]
