"""The fleet database's tables, created on open, and the columns added since (migrations).

Tables: ``releases`` (immutable, monotonic versions per model), ``devices`` (tags, broker
credential hash, presence, last reported state, desired ``seq``), ``device_targets`` (what each
device should run, per model: the desired state is built from these rows), ``rollouts`` and
``rollout_devices``, ``device_failures`` (every failure a device reported in a rollout, with
its reason code and error; never changed by a revert), ``experiments``, ``audit_log`` and
``telemetry`` (one row per device, model version and telemetry window) and
``server_accounts`` (the broker user of every fleet-server replica on this database). Times
are float UNIX seconds; JSON columns are TEXT.
"""

from __future__ import annotations

from .db import Database

__all__ = ["SCHEMA", "SCHEMA_LOCK_KEY", "create_schema"]

SCHEMA_LOCK_KEY = 0x65647363  # "edsc": held while a replica creates or migrates the tables

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
CREATE TABLE IF NOT EXISTS server_accounts (
    username TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, seen DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS failures_by_rollout ON device_failures (rollout, device);
CREATE INDEX IF NOT EXISTS telemetry_by_version ON telemetry (model, version, window_ts);
CREATE INDEX IF NOT EXISTS audit_by_subject ON audit_log (subject);
"""


def create_schema(db: Database) -> None:
    """Create missing tables and indexes, then add columns newer than the tables (atomic)."""
    serial = "INTEGER" if db.dialect == "sqlite" else "BIGSERIAL"
    with db.transaction():
        if db.dialect == "postgresql":
            # Replicas starting together on a new database: CREATE TABLE IF NOT EXISTS is not
            # safe against a concurrent one (both insert the type and one fails on its unique
            # index), so each waits for the other's transaction behind this lock.
            db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
        for stmt in SCHEMA.replace("{serial}", serial).split(";"):
            if stmt.strip():
                db.execute(stmt)
        _migrate(db)


def _migrate(db: Database) -> None:
    """Columns added after a store was created (CREATE TABLE IF NOT EXISTS keeps old ones)."""
    if db.dialect == "sqlite":
        cols = {r[1] for r in db.query("PRAGMA table_info(telemetry)")}
        if "experiment" not in cols:
            db.execute("ALTER TABLE telemetry ADD COLUMN experiment TEXT")
    else:
        db.execute("ALTER TABLE telemetry ADD COLUMN IF NOT EXISTS experiment TEXT")
