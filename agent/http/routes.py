"""HTTP routes: Open Inference Protocol v2 REST with Triton's repository, statistics, model
configuration and classification extensions, TF Serving's predict and metadata, ``/metrics``
and ``/openapi.json``, all behind one ``handle(request)`` callable. What the routes say about
models comes from :mod:`edgeserve.agent.serving.views`, which the gRPC API
(:mod:`edgeserve.agent.grpc`) shares.

Paths arrive percent-decoded; a model name or version that could not exist is a 400 before any
lookup (:mod:`edgeserve.agent.names`). Status codes are Triton's: 400 for a bad request, 404
for an unknown model/version/route, 503 when not ready, overloaded or timed out; every error
body is ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from edgeserve.agent.http.codec import (
    InferRequest,
    decode_request,
    dumps,
    encode_response,
    parse_json,
    timeout_s,
)
from edgeserve.agent.http.server import Request, Response, error_response
from edgeserve.agent.names import check_model_name, check_version
from edgeserve.agent.serving.core import Agent
from edgeserve.agent.serving.loaded import LoadedModel
from edgeserve.agent.serving.views import config_view, metadata_view, server_view, stats_view

from edgeserve.errors import EdgeServeError, InferenceInputError

__all__ = ["Api"]

# Big bodies are decoded, and big outputs encoded, in a worker thread so that one large
# request does not hold the event loop (and every other connection) for milliseconds.
_OFFLOAD_BYTES = 64 * 1024  # request body bytes
_OFFLOAD_ELEMENTS = 16 * 1024  # output elements
_EMPTY = Response(200, b"", "text/plain")


def _json(value: Any, status: int = 200) -> Response:
    return Response(status, dumps(value))


class Api:
    """The agent's HTTP API; ``await api.handle(request)`` never raises."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._token = agent.config.server.token.encode()
        self._key_header = agent.config.key_header

    async def handle(self, request: Request) -> Response:
        """Route one request; errors become ``{"error": ...}`` with the error's status."""
        try:
            if self._token and not request.path.startswith("/v2/health/"):
                self._check_token(request)
            return await self._route(request)
        except EdgeServeError as exc:
            return error_response(exc.http_status, str(exc))
        except _HttpError as exc:
            return error_response(exc.status, exc.message, exc.headers)

    def _check_token(self, request: Request) -> None:
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self._token
        ):
            raise _HttpError(
                401,
                "missing or wrong bearer token",
                {"www-authenticate": 'Bearer realm="edgeserve"'},
            )

    async def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path.startswith("/v2"):
            return await self._v2(request, path[3:].strip("/").split("/") if path != "/v2" else [])
        if path.startswith("/v1/models/"):
            from edgeserve.agent.http.tfserving import handle_v1

            return await handle_v1(self.agent, request, self._key_header)
        if path == "/metrics":
            _method(method, "GET")
            body, ctype = self.agent.metrics.render()
            return Response(200, body, ctype)
        if path in ("/openapi.json", "/v2/openapi.json"):
            _method(method, "GET")
            from edgeserve.agent.http.openapi import openapi_document

            return _json(openapi_document())
        raise _HttpError(404, f"no route for {method} {path}")

    async def _v2(self, request: Request, parts: list[str]) -> Response:
        method = request.method
        if not parts or parts == [""]:
            _method(method, "GET")
            return _json(server_view())
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            _method(method, "GET")
            if parts[1] == "live" or self.agent.ready:
                return _EMPTY
            return error_response(503, "agent is starting")
        if parts[0] == "repository":
            return await self._repository(request, parts[1:])
        if parts == ["models", "stats"]:
            _method(method, "GET")
            return _json({"model_stats": stats_view(self.agent, None, None)})
        if parts[0] == "models" and len(parts) >= 2:
            name, rest = check_model_name(parts[1]), parts[2:]
            version = None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = check_version(rest[1]), rest[2:]
            if not rest:
                _method(method, "GET")
                return _json(metadata_view(self.agent, name, version))
            if rest == ["ready"]:
                _method(method, "GET")
                if self.agent.model_ready(name, version):
                    return _EMPTY
                self.agent.resolve(name, version, "ready-probe", count=False)  # raises 404 / 503
                return error_response(503, f"model {name!r} is not ready")
            if rest == ["infer"]:
                _method(method, "POST")
                return await self._infer(request, name, version)
            if rest == ["stats"]:
                _method(method, "GET")
                return _json({"model_stats": stats_view(self.agent, name, version)})
            if rest == ["config"]:
                _method(method, "GET")
                return _json(config_view(self.agent, name, version))
        raise _HttpError(404, f"no route for {method} {request.path}")

    async def _infer(self, request: Request, name: str, version: str | None) -> Response:
        header_len = request.headers.get("inference-header-content-length")
        if len(request.body) > _OFFLOAD_BYTES:
            loop = asyncio.get_running_loop()
            decoded: InferRequest = await loop.run_in_executor(
                self.agent.executor, decode_request, request.body, header_len
            )
        else:
            decoded = decode_request(request.body, header_len)
        # Resolve after decoding and with no await before submit: a hot swap cannot unload
        # the version between choosing it and queueing on it.
        model: LoadedModel = self.agent.resolve(
            name, version, request.headers.get(self._key_header)
        )
        result = await model.infer(decoded.inputs, timeout_s(decoded.parameters))
        try:
            args = (
                model.name,
                model.version,
                result.outputs,
                decoded,
                model.labels,
                model.has_batch_dim,
            )
            if sum(a.size for a in result.outputs.values()) > _OFFLOAD_ELEMENTS:
                loop = asyncio.get_running_loop()
                body, headers = await loop.run_in_executor(
                    self.agent.executor, encode_response, *args
                )
            else:
                body, headers = encode_response(*args)
        except InferenceInputError:
            model.count_failure("bad_input")
            raise
        ctype = "application/octet-stream" if headers else "application/json"
        return Response(200, body, ctype, headers)

    async def _repository(self, request: Request, parts: list[str]) -> Response:
        _method(request.method, "POST")
        if parts == ["index"]:
            # Triton's index takes an optional {"ready": true} to list only ready versions
            doc = parse_json(request.body) if request.body.strip() else {}
            rows = self.agent.index()
            if isinstance(doc, dict) and doc.get("ready") is True:
                rows = [r for r in rows if r["state"] == "READY"]
            return _json(rows)
        if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
            name = check_model_name(parts[1])
            if parts[2] == "load":
                await self.agent.load(name)
            else:
                await self.agent.unload(name)
            return _EMPTY
        raise _HttpError(404, f"no route for {request.method} {request.path}")


def _method(got: str, want: str) -> None:
    if got != want:
        raise _HttpError(405, f"method {got} not allowed here; use {want}", {"allow": want})


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
