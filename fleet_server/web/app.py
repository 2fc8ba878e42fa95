"""The Starlette application: one route table; on every JSON route, route middleware maps
errors by type (:mod:`.errors`) and, on every ``/api/v1`` route, checks the operator token
(:mod:`.auth`).

Open (no token): ``/healthz``, ``/metrics`` (counts only, no device ids, like the agent's;
bind 127.0.0.1 or proxy it), ``/keyring.json`` and ``/artifacts/...`` (both signed; a device
checks them before use). The console at ``/ui`` has its own session sign-in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from ..console import MOUNT, build_console
from .auth import BearerAuth
from .errors import APP_HANDLERS, ROUTE_HANDLERS
from .handlers import Handlers

if TYPE_CHECKING:
    from ..server import FleetServer

__all__ = ["build_app", "routes"]

Endpoint = Callable[[Request], Awaitable[Response]]


def routes(fs: FleetServer) -> list[BaseRoute]:
    """The route table of one fleet server."""
    h = Handlers(fs)
    errors = [Middleware(ExceptionMiddleware, handlers=ROUTE_HANDLERS)]
    auth = [*errors, Middleware(BearerAuth, token=fs.config.server.token)]

    def open_(path: str, endpoint: Endpoint, methods: list[str] | None = None) -> Route:
        return Route(path, endpoint, methods=methods, middleware=errors)

    def api(path: str, endpoint: Endpoint, method: str) -> Route:
        return Route(f"/api/v1{path}", endpoint, methods=[method], middleware=auth)

    return [
        open_("/healthz", h.health),
        open_("/metrics", h.metrics),
        open_("/keyring.json", h.keyring),
        open_("/artifacts/{model}/{version}.tar", h.artifact, ["GET", "HEAD"]),
        api("/stats", h.stats, "GET"),
        api("/releases", h.upload_release, "POST"),
        api("/releases", h.list_releases, "GET"),
        api("/devices", h.add_device, "POST"),
        api("/devices", h.list_devices, "GET"),
        api("/devices/{device}", h.get_device, "GET"),
        api("/broker-config", h.broker_config, "GET"),
        api("/rollouts", h.start_rollout, "POST"),
        api("/rollouts", h.list_rollouts, "GET"),
        api("/rollouts/{id}", h.get_rollout, "GET"),
        api("/rollouts/{id}/{action}", h.rollout_action, "POST"),
        api("/experiments", h.start_experiment, "POST"),
        api("/experiments", h.list_experiments, "GET"),
        api("/experiments/{id}/report", h.experiment_report, "GET"),
        api("/experiments/{id}/promote", h.promote, "POST"),
        api("/experiments/{id}/stop", h.stop_experiment, "POST"),
        api("/audit", h.audit, "GET"),
        Mount(MOUNT, app=build_console(fs)),
    ]


def build_app(fs: FleetServer) -> Starlette:
    """The Starlette application of one fleet server."""
    return Starlette(routes=routes(fs), exception_handlers=APP_HANDLERS)
