"""The endpoints: device-facing (artifacts, keyring, health, metrics) and the operator API.

Artifacts are served by Starlette's ``FileResponse``, which answers single and multiple
``Range`` requests with ``206 Partial Content`` and unsatisfiable ones with ``416`` (RFC 9110
§14), so a device resumes an interrupted download where it stopped.

Endpoints raise our error types; :mod:`.errors` turns them into responses.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from edgeserve.errors import BundleError, ConfigError

from .. import api, views
from .. import experiments as ex
from .. import rollout as r
from ..rollout.views import rollout_status
from .errors import error_response

if TYPE_CHECKING:
    from ..server import FleetServer

__all__ = ["Handlers"]


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an integer") from None


class Handlers:
    """The endpoints of one fleet server, as methods (the route table is in :mod:`.app`)."""

    def __init__(self, fs: FleetServer) -> None:
        self.fs = fs
        self.cfg = fs.config.server

    async def _body_json(self, request: Request) -> Any:
        limit = self.cfg.max_request_bytes
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise ConfigError(f"request body over {limit} bytes")
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ConfigError(f"request body is not JSON ({exc})") from exc

    # -- device-facing ------------------------------------------------------------------------

    async def artifact(self, request: Request) -> Response:
        model = request.path_params["model"]
        version = _int(request.path_params["version"], "version")
        rel = await run_in_threadpool(self.fs.store.release, model, version)
        return FileResponse(
            rel["path"], media_type="application/x-tar", headers={"ETag": f'"{rel["sha256"]}"'}
        )

    async def metrics(self, request: Request) -> Response:
        from ..metrics import CONTENT_TYPE, render

        return Response(await run_in_threadpool(render, self.fs), media_type=CONTENT_TYPE)

    async def keyring(self, request: Request) -> Response:
        return Response(self.fs.keyring_bytes, media_type="application/json")

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "mqtt_connected": self.fs.mqtt_connected,
                "broker": self.fs.broker_status.to_dict(),
            }
        )

    # -- operator API -------------------------------------------------------------------------

    async def stats(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.fs.stats))

    async def upload_release(self, request: Request) -> Response:
        limit = self.cfg.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared and not declared.isdigit():
            raise ConfigError("Content-Length: not a number")
        if declared and int(declared) > limit:
            return error_response(413, f"release over the {limit} byte limit")
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".tar", dir=self.fs.artifacts)
        path = Path(name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return error_response(413, f"release over the {limit} byte limit")
                    fh.write(chunk)
            if size == 0:
                raise BundleError("empty upload: send the bundle .tar as the request body")
            result = await run_in_threadpool(self.fs.add_release, path)
            return JSONResponse(result, status_code=201)
        finally:
            path.unlink(missing_ok=True)

    async def list_releases(self, request: Request) -> Response:
        releases = await run_in_threadpool(views.release_details, self.fs.store)
        return JSONResponse({"releases": releases})

    async def add_device(self, request: Request) -> Response:
        device, tags = api.device_request(await self._body_json(request))
        added = await run_in_threadpool(self.fs.add_device, device, tags)
        return JSONResponse(added, status_code=201)

    async def list_devices(self, request: Request) -> Response:
        tags = api.selector(request.query_params.get("tag", ""), "tag")
        state = request.query_params.get("state")
        devices = await run_in_threadpool(self.fs.device_list)
        return JSONResponse({"devices": views.filter_devices(devices, tags, state)})

    async def get_device(self, request: Request) -> Response:
        device = request.path_params["device"]
        return JSONResponse(await run_in_threadpool(views.device_detail, self.fs.store, device))

    async def broker_config(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.fs.broker_files))

    async def start_rollout(self, request: Request) -> Response:
        timeout_s = self.fs.config.rollouts.install_timeout_s
        spec = api.rollout_request(await self._body_json(request), timeout_s)
        rid = await run_in_threadpool(r.create_rollout, self.fs.store, spec, "operator")
        self.fs.engine.wake()
        return JSONResponse({"id": rid}, status_code=201)

    async def list_rollouts(self, request: Request) -> Response:
        return JSONResponse({"rollouts": await run_in_threadpool(self.fs.rollout_list)})

    async def get_rollout(self, request: Request) -> Response:
        rid = _int(request.path_params["id"], "rollout id")
        text = request.query_params.get("devices", "true").lower()
        if text not in ("true", "false", "1", "0"):
            raise ConfigError(f"devices: {text!r} is not true or false")
        devices = text in ("true", "1")
        return JSONResponse(await run_in_threadpool(rollout_status, self.fs.store, rid, devices))

    async def rollout_action(self, request: Request) -> Response:
        rid = _int(request.path_params["id"], "rollout id")
        body = await self._body_json(request)
        reason = str(body.get("reason") or "operator request") if isinstance(body, dict) else ""
        action = request.path_params["action"]
        return JSONResponse(await run_in_threadpool(self.fs.rollout_action, rid, action, reason))

    async def start_experiment(self, request: Request) -> Response:
        kwargs = api.experiment_request(await self._body_json(request))
        eid, changed = await run_in_threadpool(
            lambda: ex.start_experiment(self.fs.store, actor="operator", **kwargs)
        )
        await run_in_threadpool(self.fs.engine.publish_desired, changed)
        return JSONResponse({"id": eid, "devices": len(changed)}, status_code=201)

    async def list_experiments(self, request: Request) -> Response:
        return JSONResponse({"experiments": await run_in_threadpool(self.fs.experiment_list)})

    async def experiment_report(self, request: Request) -> Response:
        eid = _int(request.path_params["id"], "experiment id")
        text = request.query_params.get("min_effect")
        effect = api.min_effect(text) if text else None
        return JSONResponse(
            await run_in_threadpool(lambda: ex.report(self.fs.store, eid, min_effect=effect))
        )

    async def promote(self, request: Request) -> Response:
        eid = _int(request.path_params["id"], "experiment id")
        body = await self._body_json(request)
        version = body.get("version") if isinstance(body, dict) else None
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ConfigError("version: must be an integer")
        rid = await run_in_threadpool(self.fs.promote_experiment, eid, version)
        return JSONResponse({"rollout": rid}, status_code=201)

    async def stop_experiment(self, request: Request) -> Response:
        eid = _int(request.path_params["id"], "experiment id")
        await run_in_threadpool(ex.stop_experiment, self.fs.store, eid, "operator")
        return JSONResponse(await run_in_threadpool(ex.experiment, self.fs.store, eid))

    async def audit(self, request: Request) -> Response:
        subject = request.query_params.get("subject")
        action = request.query_params.get("action")
        limit = _int(request.query_params.get("limit", "200"), "limit")
        if not 0 < limit <= 10_000:
            raise ConfigError("limit: between 1 and 10000")
        entries = await run_in_threadpool(
            lambda: self.fs.store.audit_entries(subject, limit, action)
        )
        return JSONResponse({"entries": entries})
