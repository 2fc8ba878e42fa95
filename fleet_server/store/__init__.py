"""The fleet store: every SQL statement the fleet server runs, behind named methods.

One :class:`Store` facade, made of one query group per concept; the services (releases,
rollouts, experiments, ingest, the engine) call its methods and hold no SQL themselves.

- ``db``: the connection layer, one lock-guarded connection to SQLite or PostgreSQL, the
  same portable SQL for both.
- ``schema``: the tables, created on open, and the columns added since.
- ``records``: the rows handed out (:class:`Target`, :class:`DeviceRow`, :class:`RolloutRow`,
  :class:`ExperimentRow`).
- ``releases``: uploaded, signed releases (immutable, versions monotonic per model).
- ``devices``: registered devices, their reports and presence, and what each should run
  (``device_targets``, from which the desired state published over MQTT is built).
- ``rollouts``: rollouts, each device's progress in one, and the failures devices reported.
- ``experiments``: A/B experiments.
- ``telemetry``: the windows devices report, which the gates and experiments judge.
- ``audit``: every decision and operator action, with its reason.
"""

from __future__ import annotations

from .audit import AuditQueries
from .db import Database
from .devices import DeviceQueries
from .experiments import ExperimentQueries
from .records import DeviceRow, ExperimentRow, RolloutRow, Target
from .releases import ReleaseQueries
from .rollouts import RolloutQueries
from .schema import SCHEMA, create_schema
from .telemetry import TelemetryQueries

__all__ = [
    "SCHEMA",
    "DeviceRow",
    "ExperimentRow",
    "RolloutRow",
    "Store",
    "Target",
]


class Store(
    ReleaseQueries,
    DeviceQueries,
    RolloutQueries,
    ExperimentQueries,
    TelemetryQueries,
    AuditQueries,
):
    """Queries over the fleet database (tables created on open). Safe to share between
    threads."""

    # One rollout controller across replicas: a PostgreSQL session-level advisory lock, held
    # for as long as this process's connection lives (PostgreSQL docs, "Advisory Locks"); when
    # the holder dies its session ends and another replica's next try takes over. SQLite is
    # one machine, one server: always the leader.
    LEADER_LOCK_KEY = 0x65646765  # "edge"

    def __init__(self, db: Database) -> None:
        self.db = db
        self._leader = False
        create_schema(db)

    def try_leader(self) -> bool:
        """True when this process runs the rollout controller (see ``LEADER_LOCK_KEY``)."""
        if self.db.dialect != "postgresql":
            return True
        if not self._leader:
            row = self.db.one("SELECT pg_try_advisory_lock(?)", (self.LEADER_LOCK_KEY,))
            self._leader = bool(row and row[0])
        return self._leader

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()
