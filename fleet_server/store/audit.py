"""Queries on ``audit_log``: every decision and operator action, with its reason."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .base import Queries
from .records import to_json

__all__ = ["AuditQueries"]


class AuditQueries(Queries):
    """Append to the audit log and read it back."""

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
            (time.time(), actor, action, subject, reason, to_json(dict(detail or {}))),
        )

    def audit_entries(
        self, subject: str | None = None, limit: int = 200, action: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest audit entries, optionally for one subject (e.g. ``rollout:3``) and for
        actions starting with ``action`` (``rollout.`` or ``rollout.pause``)."""
        clauses: list[str] = []
        params: list[Any] = []
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
