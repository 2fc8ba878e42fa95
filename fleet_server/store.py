"""The fleet store: schema and every query the server makes, over :class:`~.db.Database`.

Tables: ``releases`` (immutable, monotonic versions per model), ``devices`` (tags, broker
credential hash, presence, last reported state, desired ``seq``), ``device_targets`` (what each
device should run, per model: the desired state is built from these rows), ``rollouts`` and
``rollout_devices``, ``device_failures`` (every failure a device reported in a rollout, with
its reason code and error; never changed by a revert), ``experiments``, ``audit_log`` and
``telemetry`` (one row per device, model version and telemetry window). Times are float UNIX
seconds; JSON columns are TEXT.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeserve.errors import ConfigError, NotFoundError

from .db import Database

__all__ = ["SCHEMA", "DeviceRow", "Store", "Target"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    model TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL, size BIGINT NOT NULL,
    manifest TEXT NOT NULL, envelope TEXT NOT NULL, path TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, tags TEXT NOT NULL, secret_hash TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, presence TEXT NOT NULL DEFAULT 'unknown',
    presence_at DOUBLE PRECISION, reported TEXT, reported_at DOUBLE PRECISION,
    desired_seq BIGINT NOT NULL DEFAULT 0, desired_expires DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS device_targets (
    device TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    allow_downgrade INTEGER NOT NULL DEFAULT 0, split TEXT, experiment TEXT,
    PRIMARY KEY (device, model));
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL, phase_index INTEGER NOT NULL, phase_started DOUBLE PRECISION,
    reason TEXT NOT NULL DEFAULT '', gates TEXT NOT NULL DEFAULT '{}',
    created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout INTEGER NOT NULL, device TEXT NOT NULL, bucket DOUBLE PRECISION NOT NULL,
    baseline INTEGER, assigned DOUBLE PRECISION, state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (rollout, device));
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, ended DOUBLE PRECISION, rollout INTEGER);
CREATE TABLE IF NOT EXISTS audit_log (
    id {serial} PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, subject TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS telemetry (
    device TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    window_ts DOUBLE PRECISION NOT NULL, count BIGINT NOT NULL, errors BIGINT NOT NULL,
    p50 DOUBLE PRECISION, p95 DOUBLE PRECISION, p99 DOUBLE PRECISION,
    received DOUBLE PRECISION NOT NULL, experiment TEXT,
    PRIMARY KEY (device, model, version, window_ts));
CREATE TABLE IF NOT EXISTS device_failures (
    id {serial} PRIMARY KEY, rollout INTEGER NOT NULL, device TEXT NOT NULL,
    model TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL,
    reason_code TEXT NOT NULL, error TEXT NOT NULL, phase INTEGER NOT NULL,
    ts DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS failures_by_rollout ON device_failures (rollout, device);
CREATE INDEX IF NOT EXISTS telemetry_by_version ON telemetry (model, version, window_ts);
CREATE INDEX IF NOT EXISTS audit_by_subject ON audit_log (subject);
"""


@dataclass(frozen=True)
class Target:
    """One model a device should run (a ``device_targets`` row)."""

    model: str
    version: int
    allow_downgrade: bool = False
    split: Mapping[str, Any] | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class DeviceRow:
    """A device as the store knows it."""

    id: str
    tags: Mapping[str, str]
    presence: str
    reported: Mapping[str, Any]
    reported_at: float | None
    desired_seq: int
    created: float


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Store:
    """Queries over the fleet database. Safe to share between threads."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._leader = False
        serial = "INTEGER" if db.dialect == "sqlite" else "BIGSERIAL"
        with db.transaction():
            for stmt in SCHEMA.replace("{serial}", serial).split(";"):
                if stmt.strip():
                    db.execute(stmt)
            self._migrate()

    def _migrate(self) -> None:
        """Columns added after a store was created (CREATE TABLE IF NOT EXISTS keeps old ones)."""
        if self.db.dialect == "sqlite":
            cols = {r[1] for r in self.db.query("PRAGMA table_info(telemetry)")}
            if "experiment" not in cols:
                self.db.execute("ALTER TABLE telemetry ADD COLUMN experiment TEXT")
        else:
            self.db.execute("ALTER TABLE telemetry ADD COLUMN IF NOT EXISTS experiment TEXT")

    # -- releases ---------------------------------------------------------------------------

    def latest_version(self, model: str) -> int:
        """Highest released version of ``model`` (0 when none)."""
        row = self.db.one("SELECT MAX(version) FROM releases WHERE model = ?", (model,))
        return int(row[0]) if row and row[0] is not None else 0

    def add_release(
        self,
        model: str,
        version: int,
        sha256: str,
        size: int,
        manifest: Any,
        envelope: Any,
        path: str,
    ) -> None:
        """Insert a release; versions must grow (monotonic per model, immutable).

        Raises:
            ConfigError: the version is not above the latest one.
        """
        with self.db.transaction():
            latest = self.latest_version(model)
            if version <= latest:
                raise ConfigError(
                    f"{model} version {version} is not above the latest release {latest}; "
                    "releases are immutable and versions monotonic"
                )
            self.db.execute(
                "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (model, version, sha256, size, _json(manifest), _json(envelope), path, time.time()),
            )

    def release(self, model: str, version: int) -> dict[str, Any]:
        """One release as a dict (``model, version, sha256, size, manifest, envelope, path``).

        Raises:
            NotFoundError: no such release.
        """
        row = self.db.one(
            "SELECT model, version, sha256, size, manifest, envelope, path, created "
            "FROM releases WHERE model = ? AND version = ?",
            (model, version),
        )
        if row is None:
            raise NotFoundError(f"no release {model} version {version}")
        return {
            "model": row[0],
            "version": int(row[1]),
            "sha256": row[2],
            "size": int(row[3]),
            "manifest": json.loads(row[4]),
            "envelope": json.loads(row[5]),
            "path": row[6],
            "created": row[7],
        }

    def releases(self) -> list[dict[str, Any]]:
        """Every release (without manifests), newest first per model."""
        rows = self.db.query(
            "SELECT model, version, sha256, size, created FROM releases "
            "ORDER BY model, version DESC"
        )
        return [
            {
                "model": r[0],
                "version": int(r[1]),
                "sha256": r[2],
                "size": int(r[3]),
                "created": r[4],
            }
            for r in rows
        ]

    # -- devices ----------------------------------------------------------------------------

    def add_device(self, device: str, tags: Mapping[str, str], secret_hash: str) -> None:
        """Register a device.

        Raises:
            ConfigError: the id is taken.
        """
        with self.db.transaction():
            if self.db.one("SELECT 1 FROM devices WHERE id = ?", (device,)):
                raise ConfigError(f"device {device!r} already exists")
            self.db.execute(
                "INSERT INTO devices (id, tags, secret_hash, created) VALUES (?, ?, ?, ?)",
                (device, _json(dict(tags)), secret_hash, time.time()),
            )

    def _device(self, row: Row) -> DeviceRow:
        return DeviceRow(
            id=row[0],
            tags=json.loads(row[1]),
            presence=row[2],
            reported=json.loads(row[3]) if row[3] else {},
            reported_at=row[4],
            desired_seq=int(row[5]),
            created=row[6],
        )

    _DEVICE_COLS = "id, tags, presence, reported, reported_at, desired_seq, created"

    def devices(self) -> list[DeviceRow]:
        """Every device, by id."""
        rows = self.db.query(f"SELECT {self._DEVICE_COLS} FROM devices ORDER BY id")
        return [self._device(r) for r in rows]

    def device(self, device: str) -> DeviceRow:
        """One device.

        Raises:
            NotFoundError: unknown device.
        """
        row = self.db.one(f"SELECT {self._DEVICE_COLS} FROM devices WHERE id = ?", (device,))
        if row is None:
            raise NotFoundError(f"no device {device!r}")
        return self._device(row)

    def known_devices(self) -> set[str]:
        """Ids of every registered device."""
        return {r[0] for r in self.db.query("SELECT id FROM devices")}

    def credential_hashes(self) -> list[tuple[str, str]]:
        """``(device id, mosquitto password hash)`` for every device."""
        return [(r[0], r[1]) for r in self.db.query("SELECT id, secret_hash FROM devices")]

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

    def active_rollout_progress(self) -> list[dict[str, Any]]:
        """Running and paused rollouts: id, model, version, status, phase, devices by state."""
        out = []
        for rid, model, version, status, index, spec in self.db.query(
            "SELECT id, model, version, status, phase_index, spec FROM rollouts "
            "WHERE status IN ('running', 'paused') ORDER BY id"
        ):
            phases = json.loads(spec)["phases"]
            counts = {
                r[0]: int(r[1])
                for r in self.db.query(
                    "SELECT state, COUNT(*) FROM rollout_devices WHERE rollout = ? GROUP BY state",
                    (rid,),
                )
            }
            out.append(
                {
                    "id": int(rid),
                    "model": model,
                    "version": int(version),
                    "status": status,
                    "phase_index": int(index),
                    "phase_percent": phases[min(int(index), len(phases) - 1)],
                    "counts": counts,
                }
            )
        return out

    def set_presence(self, rows: Sequence[tuple[str, str, float]]) -> None:
        """Record ``(device, online|offline, ts)`` rows."""
        self.db.executemany(
            "UPDATE devices SET presence = ?, presence_at = ? WHERE id = ?",
            [(p, ts, d) for d, p, ts in rows],
        )

    def set_reported(self, rows: Sequence[tuple[str, Mapping[str, Any], float]]) -> None:
        """Record each device's latest reported document."""
        self.db.executemany(
            "UPDATE devices SET reported = ?, reported_at = ? WHERE id = ?",
            [(_json(doc), ts, d) for d, doc, ts in rows],
        )

    # -- desired state ----------------------------------------------------------------------

    def targets(self, device: str) -> list[Target]:
        """What ``device`` should run, per model."""
        rows = self.db.query(
            "SELECT model, version, allow_downgrade, split, experiment FROM device_targets "
            "WHERE device = ? ORDER BY model",
            (device,),
        )
        return [
            Target(r[0], int(r[1]), bool(r[2]), json.loads(r[3]) if r[3] else None, r[4])
            for r in rows
        ]

    def target_versions(self, model: str) -> dict[str, int]:
        """``device -> version`` currently desired for ``model``."""
        rows = self.db.query("SELECT device, version FROM device_targets WHERE model = ?", (model,))
        return {r[0]: int(r[1]) for r in rows}

    def set_target(self, device: str, target: Target | None, model: str) -> None:
        """Set (or with None, remove) what ``device`` should run for ``model``."""
        self.db.execute(
            "DELETE FROM device_targets WHERE device = ? AND model = ?", (device, model)
        )
        if target is not None:
            self.db.execute(
                "INSERT INTO device_targets VALUES (?, ?, ?, ?, ?, ?)",
                (
                    device,
                    model,
                    target.version,
                    int(target.allow_downgrade),
                    _json(target.split) if target.split else None,
                    target.experiment,
                ),
            )

    def bump_seq(self, device: str, expires: float) -> int:
        """Next desired ``seq`` for ``device`` (monotonic, persisted before publishing)."""
        with self.db.transaction():
            self.db.execute(
                "UPDATE devices SET desired_seq = desired_seq + 1, desired_expires = ? "
                "WHERE id = ?",
                (expires, device),
            )
            row = self.db.one("SELECT desired_seq FROM devices WHERE id = ?", (device,))
        if row is None:
            raise NotFoundError(f"no device {device!r}")
        return int(row[0])

    def expiring(self, before: float) -> list[str]:
        """Devices whose published desired state expires before ``before``."""
        rows = self.db.query(
            "SELECT id FROM devices WHERE desired_seq > 0 AND desired_expires < ?", (before,)
        )
        return [r[0] for r in rows]

    # -- audit ------------------------------------------------------------------------------

    def audit(
        self,
        actor: str,
        action: str,
        subject: str,
        reason: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one decision to the audit log, with its reason."""
        self.db.execute(
            "INSERT INTO audit_log (ts, actor, action, subject, reason, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), actor, action, subject, reason, _json(dict(detail or {}))),
        )

    def audit_entries(
        self, subject: str | None = None, limit: int = 200, action: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest audit entries, optionally for one subject (e.g. ``rollout:3``) and for
        actions starting with ``action`` (``rollout.`` or ``rollout.pause``)."""
        clauses, params = [], []
        if subject:
            clauses, params = ["subject = ?"], [subject]
        if action:
            # LIKE with an escape character, so '_' and '%' in the filter match themselves
            escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("action LIKE ? ESCAPE '\\'")
            params.append(escaped + "%")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.query(
            f"SELECT ts, actor, action, subject, reason, detail FROM audit_log {where} "
            "ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [
            {
                "ts": r[0],
                "actor": r[1],
                "action": r[2],
                "subject": r[3],
                "reason": r[4],
                "detail": json.loads(r[5]),
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
        return [{"device": r[0], **_failure(r[1:])} for r in rows]

    def device_failures_of(self, device: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest failures ``device`` reported, in any rollout, newest first."""
        rows = self.db.query(
            "SELECT rollout, model, version, state, reason_code, error, phase, ts "
            "FROM device_failures WHERE device = ? ORDER BY id DESC LIMIT ?",
            (device, limit),
        )
        return [{"rollout": int(r[0]), **_failure(r[1:])} for r in rows]

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

    # -- telemetry --------------------------------------------------------------------------

    def add_telemetry(self, rows: Iterable[Sequence[Any]]) -> None:
        """Upsert ``(device, model, version, window_ts, count, errors, p50, p95, p99,
        experiment)`` rows."""
        now = time.time()
        self.db.executemany(
            "INSERT INTO telemetry (device, model, version, window_ts, count, errors, p50, p95, "
            "p99, experiment, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (device, model, version, window_ts) DO UPDATE SET "
            "count = excluded.count, errors = excluded.errors, p50 = excluded.p50, "
            "p95 = excluded.p95, p99 = excluded.p99, experiment = excluded.experiment, "
            "received = excluded.received",
            [(*r, now) for r in rows],
        )

    def telemetry(
        self,
        model: str,
        version: int,
        since: float = 0.0,
        devices: Sequence[str] | None = None,
        experiment: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Telemetry windows ``(device, window_ts, count, errors, p50, p95, p99)``; with
        ``experiment``, only the windows the devices labelled with it."""
        where, params = "", [model, version, since]
        if experiment is not None:
            where, params = " AND experiment = ?", [*params, experiment]
        rows = self.db.query(
            "SELECT device, window_ts, count, errors, p50, p95, p99 FROM telemetry "
            f"WHERE model = ? AND version = ? AND window_ts >= ?{where} ORDER BY window_ts",
            params,
        )
        if devices is not None:
            wanted = set(devices)
            rows = [r for r in rows if r[0] in wanted]
        return rows

    def device_telemetry(self, device: str, limit: int = 10) -> list[dict[str, Any]]:
        """The newest telemetry windows of ``device``, newest first."""
        rows = self.db.query(
            "SELECT model, version, window_ts, count, errors, p50, p95, p99, experiment "
            "FROM telemetry WHERE device = ? ORDER BY window_ts DESC LIMIT ?",
            (device, limit),
        )
        keys = ("model", "version", "window_ts", "count", "errors", "p50", "p95", "p99")
        return [{**dict(zip(keys, r[:8], strict=True)), "experiment": r[8]} for r in rows]

    def prune_telemetry(self, before: float) -> None:
        """Drop telemetry windows older than ``before``."""
        self.db.execute("DELETE FROM telemetry WHERE window_ts < ?", (before,))

    # One rollout controller across replicas: a PostgreSQL session-level advisory lock, held
    # for as long as this process's connection lives (PostgreSQL docs, "Advisory Locks"); when
    # the holder dies its session ends and another replica's next try takes over. SQLite is
    # one machine, one server: always the leader.
    LEADER_LOCK_KEY = 0x65646765  # "edge"

    def try_leader(self) -> bool:
        """True when this process runs the rollout controller (see ``LEADER_LOCK_KEY``)."""
        if self.db.dialect != "postgresql":
            return True
        if not self._leader:
            row = self.db.one("SELECT pg_try_advisory_lock(?)", (self.LEADER_LOCK_KEY,))
            self._leader = bool(row and row[0])
        return self._leader

    def next_id(self, table: str) -> int:
        """Next integer id for ``rollouts`` or ``experiments`` (call inside a transaction)."""
        if table not in ("rollouts", "experiments"):
            raise ValueError(table)
        row = self.db.one(f"SELECT MAX(id) FROM {table}")
        return int(row[0] or 0) + 1 if row else 1


Row = tuple[Any, ...]


def _failure(row: Any) -> dict[str, Any]:
    """A ``device_failures`` row from ``model`` on (model, version, state, reason_code, error,
    phase, ts) as the API shows it."""
    model, version, state, reason_code, error, phase, ts = row
    return {
        "model": model,
        "version": int(version),
        "state": state,
        "reason_code": reason_code,
        "error": error,
        "phase": int(phase),
        "ts": ts,
    }
