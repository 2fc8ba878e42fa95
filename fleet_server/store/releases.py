"""Queries on ``releases``: immutable, with versions monotonic per model."""

from __future__ import annotations

import json
import time
from typing import Any

from edgeserve.errors import ConfigError, NotFoundError

from .base import Queries
from .records import to_json

__all__ = ["ReleaseQueries"]


class ReleaseQueries(Queries):
    """Releases: add one, read one, list them."""

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
                (
                    model,
                    version,
                    sha256,
                    size,
                    to_json(manifest),
                    to_json(envelope),
                    path,
                    time.time(),
                ),
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
