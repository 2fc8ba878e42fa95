"""The fleet HTTP layer's pieces without a server: errors become JSON with the status their
type carries, and the bearer check."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from edgeserve.fleet_server.web.auth import BearerAuth
from edgeserve.fleet_server.web.errors import APP_HANDLERS, ROUTE_HANDLERS
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgeserve.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    TransitionError,
    VerificationError,
)


def _app() -> Starlette:
    errors = {
        "conflict": ConflictError("device 'd1' already exists"),
        "config": ConfigError("phases must increase"),
        "transition": TransitionError("cannot pause rollout 1: it is paused"),
        "missing": NotFoundError("no rollout 9"),
        "bundle": VerificationError("bad   signature"),
        "bug": RuntimeError("oops"),
    }

    async def fail(request: Request) -> Response:
        raise errors[request.path_params["kind"]]

    async def ok(request: Request) -> Response:
        return JSONResponse({"ok": True})

    handled = [Middleware(ExceptionMiddleware, handlers=ROUTE_HANDLERS)]
    auth = [*handled, Middleware(BearerAuth, token="s3cret")]
    return Starlette(
        routes=[
            Route("/fail/{kind}", fail, middleware=handled),
            Route("/api", ok, middleware=auth),
        ],
        exception_handlers=APP_HANDLERS,
    )


class Client:
    """Requests straight into the ASGI app (no server, no network)."""

    def __init__(self, app: Starlette, *, raise_app_exceptions: bool = False) -> None:
        self.transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://t") as c:
                return await c.request(method, path, **kw)

        return asyncio.run(go())

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)


def test_errors_map_by_type() -> None:
    client = Client(_app(), raise_app_exceptions=True)  # a bug is answered, not re-raised
    expected = {
        "conflict": 409,
        "config": 400,
        "transition": 400,
        "missing": 404,
        "bundle": 422,
        "bug": 500,
    }
    for kind, status in expected.items():
        r = client.get(f"/fail/{kind}")
        assert r.status_code == status, (kind, r.text)
        assert set(r.json()) == {"error"}
    assert client.get("/fail/bundle").json()["error"] == "bad signature"  # one line
    assert client.get("/fail/bug").json()["error"] == "internal error: RuntimeError"
    assert client.get("/nowhere").status_code == 404
    assert client.post("/api").status_code == 405  # method checked before the token


def test_bearer_auth() -> None:
    client = Client(_app())
    assert client.get("/api").status_code == 401
    assert client.get("/api", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api", headers={"Authorization": "Basic s3cret"}).status_code == 401
    r = client.get("/api", headers={"Authorization": "bearer s3cret"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert "token" in json.loads(client.get("/api").text)["error"]
    assert BearerAuth(lambda *a: asyncio.sleep(0), "t").authorized("Bearer t")  # type: ignore[arg-type]
