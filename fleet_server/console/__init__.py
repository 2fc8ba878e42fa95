"""The operator's web console at ``/ui/``: server-rendered pages (Jinja2) that htmx keeps
live, uPlot for charts, all shipped in the wheel (``static/vendor``, refreshed from the npm
registry by ``scripts/update-console-assets``): no CDN, no build step at install.

Every page and action calls the same fleet-server operations as the JSON API, so the console
and the CLI see and change the same state and write the same audit log.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from edgeserve.errors import EdgeServeError

from .auth import COOKIE, ConsoleGuard, session_key
from .pages import Pages

if TYPE_CHECKING:
    from ..server import FleetServer

__all__ = ["MOUNT", "build_console"]

MOUNT = "/ui"
SESSION_MAX_AGE_S = 12 * 3600
HERE = Path(__file__).parent
log = logging.getLogger(__name__)


def _when(ts: Any) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _size(n: Any) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _back(request: Request) -> str | None:
    """Where the error page's Back link goes: the console page the request came from."""
    ref = urlsplit(request.headers.get("referer", ""))
    if ref.netloc == request.url.netloc and ref.path.startswith(MOUNT + "/"):
        return ref.path + (f"?{ref.query}" if ref.query else "")
    return None


def templates() -> Jinja2Templates:
    """The console's templates, with its filters (times in UTC, numbers, sizes)."""
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters.update(when=_when, num=_num, size=_size)
    return t


def build_console(fs: FleetServer) -> Starlette:
    """The console as a Starlette app, to be mounted at :data:`MOUNT`."""
    pages = Pages(fs, templates(), MOUNT)
    p = pages
    routes = [
        Route("/login", p.login_form, methods=["GET"]),
        Route("/login", p.login, methods=["POST"]),
        Route("/logout", p.logout, methods=["POST"]),
        Route("/", p.fleet),
        Route("/fleet/panel", p.fleet_panel),
        Route("/devices/{device}", p.device),
        Route("/releases", p.releases),
        Route("/rollouts", p.rollouts),
        Route("/rollouts/panel", p.rollouts_panel),
        Route("/rollouts/{id}", p.rollout),
        Route("/rollouts/{id}/panel", p.rollout_panel),
        Route("/rollouts/{id}/{action}", p.confirm_action, methods=["GET"]),
        Route("/rollouts/{id}/{action}", p.do_action, methods=["POST"]),
        Route("/experiments", p.experiments),
        Route("/experiments/{id}", p.experiment),
        Route("/experiments/{id}/panel", p.experiment_panel),
        Route("/experiments/{id}/series.json", p.experiment_series),
        Route("/experiments/{id}/promote", p.confirm_promote, methods=["GET"]),
        Route("/experiments/{id}/promote", p.promote, methods=["POST"]),
        Route("/audit", p.audit),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    secure = fs.config.server.base_url.startswith("https://")
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=session_key(fs.config.server.token),
            session_cookie=COOKIE,
            max_age=SESSION_MAX_AGE_S,
            path=MOUNT,
            same_site="strict",
            https_only=secure,
        ),
        Middleware(ConsoleGuard, mount=MOUNT),
    ]
    app = Starlette(routes=routes, middleware=middleware)

    async def error_page(request: Request, exc: Exception) -> Response:
        if isinstance(exc, EdgeServeError):
            status, message = exc.http_status, " ".join(str(exc).split())
        else:
            status = getattr(exc, "status_code", 500)
            message = "no such page" if status == 404 else f"{request.method} not allowed"
        return pages.render(
            request, "error.html", status=status, message=message, back=_back(request)
        )

    async def bug(request: Request, exc: Exception) -> Response:
        log.exception("console error on %s %s", request.method, request.url.path)
        return pages.render(request, "error.html", status=500, message="internal error")

    app.add_exception_handler(EdgeServeError, error_page)
    app.add_exception_handler(404, error_page)
    app.add_exception_handler(405, error_page)
    app.add_exception_handler(Exception, bug)
    return app
