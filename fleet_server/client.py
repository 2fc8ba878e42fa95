"""The operator API client (httpx), used by the CLI and usable from Python.

Server answers ``{"error": msg}`` with a 4xx/5xx status; the client raises the matching
:class:`~edgeserve.errors.EdgeServeError` with that message, so the CLI prints one line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from edgeserve.errors import (
    BundleError,
    ConfigError,
    EdgeServeError,
    NotFoundError,
    TransportError,
    UnavailableError,
)

__all__ = ["FleetClient"]


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json().get("error") or response.text
    except ValueError:
        message = response.text.strip()[:200] or response.reason_phrase
    status = response.status_code
    if status == 404:
        raise NotFoundError(message)
    if status == 422:
        raise BundleError(message)
    if status in (400, 401, 403, 409, 413):
        raise ConfigError(f"{message} (HTTP {status})" if status != 400 else message)
    if status == 503:
        raise UnavailableError(message)
    raise EdgeServeError(f"fleet server: {message} (HTTP {status})")


class FleetClient:
    """A thin wrapper over the ``/api/v1`` endpoints.

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:8700``.
        token: the operator bearer token.
        timeout_s: per-request timeout.
        connect_wait_s: keep retrying a refused connection this long (the CLI waits for a
            server that was just started in the background); 0 fails at once.
    """

    def __init__(
        self, url: str, token: str, timeout_s: float = 30.0, connect_wait_s: float = 0.0
    ) -> None:
        self.url = url.rstrip("/")
        self.connect_wait_s = connect_wait_s
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout_s, headers={"Authorization": f"Bearer {token}"}
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; returns the decoded JSON.

        Raises:
            TransportError: the server cannot be reached.
            EdgeServeError: the server answered with an error (subclass by status).
        """
        deadline = time.monotonic() + self.connect_wait_s
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
                break
            except httpx.ConnectError as exc:
                # nothing was sent: safe to retry, also for POST; a streamed body is not
                # rewindable, so uploads are not retried
                if time.monotonic() >= deadline or "content" in kwargs:
                    raise TransportError(f"fleet server {self.url}: {exc}") from exc
                time.sleep(0.25)
            except httpx.HTTPError as exc:
                raise TransportError(f"fleet server {self.url}: {exc}") from exc
        _raise_for(response)
        return response.json()

    def upload_release(self, tar: Path) -> dict[str, Any]:
        """Upload a signed bundle tar (streamed)."""
        with open(tar, "rb") as fh:
            return self.request(
                "POST",
                "/api/v1/releases",
                content=fh,
                headers={
                    "Content-Type": "application/x-tar",
                    "Content-Length": str(tar.stat().st_size),
                },
            )

    def add_device(self, device: str, tags: dict[str, str]) -> dict[str, Any]:
        """Register a device; returns its credentials."""
        return self.request("POST", "/api/v1/devices", json={"id": device, "tags": tags})

    def devices(self) -> list[dict[str, Any]]:
        """Every device."""
        return self.request("GET", "/api/v1/devices")["devices"]

    def start_rollout(self, spec: dict[str, Any]) -> int:
        """Start a rollout; returns its id."""
        return int(self.request("POST", "/api/v1/rollouts", json=spec)["id"])

    def rollouts(self) -> list[dict[str, Any]]:
        """Every rollout, newest first."""
        return self.request("GET", "/api/v1/rollouts")["rollouts"]

    def rollout(self, rollout_id: int, devices: bool = True) -> dict[str, Any]:
        """One rollout's status (``devices=False``: without the per-device rows)."""
        query = "" if devices else "?devices=false"
        return self.request("GET", f"/api/v1/rollouts/{rollout_id}{query}")

    def rollout_action(self, rollout_id: int, action: str, reason: str = "") -> dict[str, Any]:
        """pause | resume | abort | rollback."""
        return self.request(
            "POST",
            f"/api/v1/rollouts/{rollout_id}/{action}",
            json={"reason": reason or "operator request"},
        )

    def start_experiment(self, body: dict[str, Any]) -> int:
        """Start an experiment; returns its id."""
        return int(self.request("POST", "/api/v1/experiments", json=body)["id"])

    def experiments(self) -> list[dict[str, Any]]:
        """Every experiment, newest first."""
        return self.request("GET", "/api/v1/experiments")["experiments"]

    def experiment_report(self, eid: int, min_effect: str | None = None) -> dict[str, Any]:
        """Per-arm statistics and the verdict (``min_effect`` e.g. ``0.5ms`` or ``5%``)."""
        params = {"min_effect": min_effect} if min_effect else None
        return self.request("GET", f"/api/v1/experiments/{eid}/report", params=params)

    def promote(self, eid: int, version: int | None = None) -> int:
        """Promote the winner; returns the rollout id."""
        body = {} if version is None else {"version": version}
        return int(self.request("POST", f"/api/v1/experiments/{eid}/promote", json=body)["rollout"])

    def releases(self) -> list[dict[str, Any]]:
        """Every release, newest first per model."""
        return list(self.request("GET", "/api/v1/releases")["releases"])

    def audit(self, subject: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Audit entries, newest first (``subject`` e.g. ``rollout:3``)."""
        params: dict[str, Any] = {"limit": limit}
        if subject:
            params["subject"] = subject
        return list(self.request("GET", "/api/v1/audit", params=params)["entries"])

    def broker_config(self) -> dict[str, str]:
        """Password file and ACL text."""
        return self.request("GET", "/api/v1/broker-config")

    def stats(self) -> dict[str, Any]:
        """Server counters."""
        return self.request("GET", "/api/v1/stats")
