"""The fleet server's HTTP side (Starlette).

- ``app``: :func:`build_app`, the route table and the error mapping: every
  :class:`~edgeserve.errors.EdgeServeError` becomes ``{"error": "<one line>"}`` with the
  status its type carries (a bundle that fails verification: 422).
- ``handlers``: the endpoints: the device-facing artifact, keyring, health and metrics
  endpoints (open: artifacts and keyring are signed, devices check them), and the operator
  JSON API under ``/api/v1`` (uploads, devices, rollouts, experiments, audit).
- ``auth``: the operator API's bearer-token check, as route middleware.

The web console (``fleet_server/console``) is mounted at ``/ui`` with its own session sign-in.
"""

from __future__ import annotations

from .app import build_app

__all__ = ["build_app"]
