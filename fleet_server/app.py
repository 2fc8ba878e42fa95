"""The HTTP side (Starlette): the operator JSON API under ``/api/v1`` (bearer token) and the
device-facing artifact and keyring endpoints.

Artifacts are served by Starlette's ``FileResponse``, which answers single and multiple
``Range`` requests with ``206 Partial Content`` and unsatisfiable ones with ``416`` (RFC 9110
§14), so a device resumes an interrupted download where it stopped. Artifacts and the keyring
need no token: both are signed, and a device checks them before use.

Every error is ``{"error": "<one line>"}`` with a 4xx status for the caller's mistakes.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from edgeserve.errors import (
    BundleError,
    ConfigError,
    EdgeServeError,
    VerificationError,
)

from . import api, views
from . import experiments as ex
from . import rollouts as r
from .console import MOUNT, build_console
from .rollout_views import rollout_status

if TYPE_CHECKING:
    from .server import FleetServer

__all__ = ["build_app"]

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


def _status(exc: EdgeServeError) -> int:
    if isinstance(exc, (VerificationError, BundleError)):
        return 422  # well-formed request, unacceptable bundle
    if isinstance(exc, ConfigError) and (
        "already" in str(exc) or "still active" in str(exc) or "is active" in str(exc)
    ):
        return 409
    return exc.http_status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def build_app(fs: FleetServer) -> Starlette:
    """The Starlette application of one fleet server."""
    cfg = fs.config.server
    token = cfg.token.encode()

    def guarded(handler: Handler, *, auth: bool = True) -> Handler:
        async def endpoint(request: Request) -> Response:
            if auth:
                given = request.headers.get("authorization", "")
                scheme, _, value = given.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token):
                    return _error(401, "missing or wrong operator token (Authorization: Bearer)")
            try:
                return await handler(request)
            except EdgeServeError as exc:
                return _error(_status(exc), str(exc))
            except Exception as exc:  # a bug: log it, answer one line
                log.exception("internal error on %s %s", request.method, request.url.path)
                return _error(500, f"internal error: {type(exc).__name__}")

        return endpoint

    async def body_json(request: Request) -> Any:
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > cfg.max_request_bytes:
                raise ConfigError(f"request body over {cfg.max_request_bytes} bytes")
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ConfigError(f"request body is not JSON ({exc})") from exc

    def _int(value: str, what: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{what}: {value!r} is not an integer") from None

    # -- device-facing ------------------------------------------------------------------------

    async def artifact(request: Request) -> Response:
        model = request.path_params["model"]
        version = _int(request.path_params["version"], "version")
        rel = await run_in_threadpool(fs.store.release, model, version)
        return FileResponse(
            rel["path"], media_type="application/x-tar", headers={"ETag": f'"{rel["sha256"]}"'}
        )

    async def metrics(request: Request) -> Response:
        from .metrics import CONTENT_TYPE, render

        return Response(await run_in_threadpool(render, fs), media_type=CONTENT_TYPE)

    async def keyring(request: Request) -> Response:
        return Response(fs.keyring_bytes, media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "mqtt_connected": fs.mqtt_connected,
                "broker": fs.broker_status.to_dict(),
            }
        )

    # -- operator API -------------------------------------------------------------------------

    async def stats(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(fs.stats))

    async def upload_release(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared and not declared.isdigit():
            raise ConfigError("Content-Length: not a number")
        if declared and int(declared) > cfg.max_upload_bytes:
            return _error(413, f"release over the {cfg.max_upload_bytes} byte limit")
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".tar", dir=fs.artifacts)
        path = Path(name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cfg.max_upload_bytes:
                        return _error(413, f"release over the {cfg.max_upload_bytes} byte limit")
                    fh.write(chunk)
            if size == 0:
                raise BundleError("empty upload: send the bundle .tar as the request body")
            result = await run_in_threadpool(fs.add_release, path)
            return JSONResponse(result, status_code=201)
        finally:
            path.unlink(missing_ok=True)

    async def list_releases(request: Request) -> Response:
        return JSONResponse({"releases": await run_in_threadpool(views.release_details, fs.store)})

    async def add_device(request: Request) -> Response:
        device, tags = api.device_request(await body_json(request))
        return JSONResponse(await run_in_threadpool(fs.add_device, device, tags), status_code=201)

    async def list_devices(request: Request) -> Response:
        tags = api.selector(request.query_params.get("tag", ""), "tag")
        state = request.query_params.get("state")
        devices = await run_in_threadpool(fs.device_list)
        return JSONResponse({"devices": views.filter_devices(devices, tags, state)})

    async def get_device(request: Request) -> Response:
        device = request.path_params["device"]
        return JSONResponse(await run_in_threadpool(views.device_detail, fs.store, device))

    async def broker_config(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(fs.broker_files))

    async def start_rollout(request: Request) -> Response:
        spec = api.rollout_request(await body_json(request), fs.config.rollouts.install_timeout_s)
        rid = await run_in_threadpool(r.create_rollout, fs.store, spec, "operator")
        fs.engine.wake()
        return JSONResponse({"id": rid}, status_code=201)

    async def list_rollouts(request: Request) -> Response:
        return JSONResponse({"rollouts": await run_in_threadpool(fs.rollout_list)})

    async def get_rollout(request: Request) -> Response:
        rid = _int(request.path_params["id"], "rollout id")
        return JSONResponse(await run_in_threadpool(rollout_status, fs.store, rid))

    async def rollout_action(request: Request) -> Response:
        rid = _int(request.path_params["id"], "rollout id")
        body = await body_json(request)
        reason = str(body.get("reason") or "operator request") if isinstance(body, dict) else ""
        action = request.path_params["action"]
        return JSONResponse(await run_in_threadpool(fs.rollout_action, rid, action, reason))

    async def start_experiment(request: Request) -> Response:
        kwargs = api.experiment_request(await body_json(request))
        eid, changed = await run_in_threadpool(
            lambda: ex.start_experiment(fs.store, actor="operator", **kwargs)
        )
        await run_in_threadpool(fs.engine.publish_desired, changed)
        return JSONResponse({"id": eid, "devices": len(changed)}, status_code=201)

    async def list_experiments(request: Request) -> Response:
        return JSONResponse({"experiments": await run_in_threadpool(fs.experiment_list)})

    async def experiment_report(request: Request) -> Response:
        eid = _int(request.path_params["id"], "experiment id")
        text = request.query_params.get("min_effect")
        effect = api.min_effect(text) if text else None
        return JSONResponse(
            await run_in_threadpool(lambda: ex.report(fs.store, eid, min_effect=effect))
        )

    async def promote(request: Request) -> Response:
        eid = _int(request.path_params["id"], "experiment id")
        body = await body_json(request)
        version = body.get("version") if isinstance(body, dict) else None
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ConfigError("version: must be an integer")
        rid = await run_in_threadpool(fs.promote_experiment, eid, version)
        return JSONResponse({"rollout": rid}, status_code=201)

    async def stop_experiment(request: Request) -> Response:
        eid = _int(request.path_params["id"], "experiment id")
        await run_in_threadpool(ex.stop_experiment, fs.store, eid, "operator")
        return JSONResponse(await run_in_threadpool(ex.experiment, fs.store, eid))

    async def audit(request: Request) -> Response:
        subject = request.query_params.get("subject")
        action = request.query_params.get("action")
        limit = _int(request.query_params.get("limit", "200"), "limit")
        if not 0 < limit <= 10_000:
            raise ConfigError("limit: between 1 and 10000")
        entries = await run_in_threadpool(lambda: fs.store.audit_entries(subject, limit, action))
        return JSONResponse({"entries": entries})

    open_ = {"auth": False}
    routes = [
        Route("/healthz", guarded(health, **open_)),
        # counts only (no device ids), like the agent's; bind 127.0.0.1 or proxy it
        Route("/metrics", guarded(metrics, **open_)),
        Route("/keyring.json", guarded(keyring, **open_)),
        Route(
            "/artifacts/{model}/{version}.tar", guarded(artifact, **open_), methods=["GET", "HEAD"]
        ),
        Route("/api/v1/stats", guarded(stats)),
        Route("/api/v1/releases", guarded(upload_release), methods=["POST"]),
        Route("/api/v1/releases", guarded(list_releases), methods=["GET"]),
        Route("/api/v1/devices", guarded(add_device), methods=["POST"]),
        Route("/api/v1/devices", guarded(list_devices), methods=["GET"]),
        Route("/api/v1/devices/{device}", guarded(get_device), methods=["GET"]),
        Route("/api/v1/broker-config", guarded(broker_config), methods=["GET"]),
        Route("/api/v1/rollouts", guarded(start_rollout), methods=["POST"]),
        Route("/api/v1/rollouts", guarded(list_rollouts), methods=["GET"]),
        Route("/api/v1/rollouts/{id}", guarded(get_rollout), methods=["GET"]),
        Route("/api/v1/rollouts/{id}/{action}", guarded(rollout_action), methods=["POST"]),
        Route("/api/v1/experiments", guarded(start_experiment), methods=["POST"]),
        Route("/api/v1/experiments", guarded(list_experiments), methods=["GET"]),
        Route("/api/v1/experiments/{id}/report", guarded(experiment_report), methods=["GET"]),
        Route("/api/v1/experiments/{id}/promote", guarded(promote), methods=["POST"]),
        Route("/api/v1/experiments/{id}/stop", guarded(stop_experiment), methods=["POST"]),
        Route("/api/v1/audit", guarded(audit), methods=["GET"]),
        # the operator's web console: its own session sign-in (console/auth.py)
        Mount(MOUNT, app=build_console(fs)),
    ]
    app = Starlette(routes=routes)

    async def http_error(request: Request, exc: Exception) -> Response:
        # unknown path (404) or method (405): the same {"error": ...} shape as everything else
        code = getattr(exc, "status_code", 500)
        what = "no route" if code == 404 else "method not allowed:"
        return _error(code, f"{what} {request.method} {request.url.path}")

    app.add_exception_handler(404, http_error)
    app.add_exception_handler(405, http_error)
    return app
