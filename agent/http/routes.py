"""HTTP routes: Open Inference Protocol v2 REST with Triton's repository, statistics, model
configuration and classification extensions, TF Serving's predict and metadata, ``/metrics``
and ``/openapi.json``, all behind one ``handle(request)`` callable. What the routes say about
models comes from :mod:`edgeserve.agent.serving.views`, which the gRPC API
(:mod:`edgeserve.agent.grpc`) shares.

Routing is a table (``_ROUTES``): path templates whose ``{name}`` and ``{version}`` segments
capture, each with a handler per method; the first template that matches wins and a known path
asked with another method is a 405. Paths arrive percent-decoded; a model name or version that
could not exist is a 400 before any lookup (:mod:`edgeserve.agent.names`). Status codes are
Triton's: 400 for a bad request, 404 for an unknown model/version/route, 503 when not ready,
overloaded or timed out; every error body is ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
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
        self._compare_digest: Callable[[bytes, bytes], bool] | None = None
        if self._token:
            # hmac imports hashlib, whose import sets up OpenSSL's digests (0.7 MB of RSS):
            # only an agent with a token compares one
            import hmac

            self._compare_digest = hmac.compare_digest
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
        compare = self._compare_digest
        if (
            scheme.lower() != "bearer"
            or compare is None
            or not compare(token.strip().encode(), self._token)
        ):
            raise _HttpError(
                401,
                "missing or wrong bearer token",
                {"www-authenticate": 'Bearer realm="edgeserve"'},
            )

    async def _route(self, request: Request) -> Response:
        route, params = _match(request.path)
        if route is None:
            raise _HttpError(404, f"no route for {request.method} {request.path}")
        # names are checked before the method: a name that could not exist is a 400 anywhere
        name = check_model_name(params["name"]) if "name" in params else None
        version = check_version(params["version"]) if "version" in params else None
        handler = route.methods.get(request.method) or route.methods.get("*")
        if handler is None:
            allow = ", ".join(route.methods)
            raise _HttpError(
                405, f"method {request.method} not allowed here; use {allow}", {"allow": allow}
            )
        return await getattr(self, handler)(request, name, version)

    # -- handlers: (request, model name or None, version or None) -> response ----------------

    async def _server(self, request: Request, name: None, version: None) -> Response:
        return _json(server_view())

    async def _live(self, request: Request, name: None, version: None) -> Response:
        return _EMPTY

    async def _ready(self, request: Request, name: None, version: None) -> Response:
        return _EMPTY if self.agent.ready else error_response(503, "agent is starting")

    async def _all_stats(self, request: Request, name: None, version: None) -> Response:
        return _json({"model_stats": stats_view(self.agent, None, None)})

    async def _metadata(self, request: Request, name: str, version: str | None) -> Response:
        return _json(metadata_view(self.agent, name, version))

    async def _model_ready(self, request: Request, name: str, version: str | None) -> Response:
        if self.agent.model_ready(name, version):
            return _EMPTY
        self.agent.resolve(name, version, "ready-probe", count=False)  # raises 404 / 503
        return error_response(503, f"model {name!r} is not ready")

    async def _stats(self, request: Request, name: str, version: str | None) -> Response:
        return _json({"model_stats": stats_view(self.agent, name, version)})

    async def _config(self, request: Request, name: str, version: str | None) -> Response:
        return _json(config_view(self.agent, name, version))

    async def _index(self, request: Request, name: None, version: None) -> Response:
        # Triton's index takes an optional {"ready": true} to list only ready versions
        doc = parse_json(request.body) if request.body.strip() else {}
        rows = self.agent.index()
        if isinstance(doc, dict) and doc.get("ready") is True:
            rows = [r for r in rows if r["state"] == "READY"]
        return _json(rows)

    async def _load(self, request: Request, name: str, version: None) -> Response:
        await self.agent.load(name)
        return _EMPTY

    async def _unload(self, request: Request, name: str, version: None) -> Response:
        await self.agent.unload(name)
        return _EMPTY

    async def _tfserving(self, request: Request, name: None, version: None) -> Response:
        from edgeserve.agent.http.tfserving import handle_v1

        return await handle_v1(self.agent, request, self._key_header)

    async def _metrics(self, request: Request, name: None, version: None) -> Response:
        body, ctype = self.agent.metrics.render()
        return Response(200, body, ctype)

    async def _openapi(self, request: Request, name: None, version: None) -> Response:
        from edgeserve.agent.http.openapi import openapi_document

        return _json(openapi_document())

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


@dataclass(frozen=True)
class _Route:
    """One path template and the handler (an :class:`Api` method name) of each method."""

    template: tuple[str, ...]  # segments; "{name}" and "{version}" capture one segment
    methods: dict[str, str]  # "*": every method (the handler answers 405 itself)


def _route(template: str, **methods: str) -> _Route:
    return _Route(tuple(template.strip("/").split("/")), methods)


_VERSIONED = "v2/models/{name}/versions/{version}"
# First match wins: /v2/models/stats before /v2/models/{name}.
_ROUTES: tuple[_Route, ...] = (
    _route("v2", GET="_server"),
    _route("v2/health/live", GET="_live"),
    _route("v2/health/ready", GET="_ready"),
    _route("v2/repository/index", POST="_index"),
    _route("v2/repository/models/{name}/load", POST="_load"),
    _route("v2/repository/models/{name}/unload", POST="_unload"),
    _route("v2/models/stats", GET="_all_stats"),
    _route("v2/models/{name}", GET="_metadata"),
    _route("v2/models/{name}/ready", GET="_model_ready"),
    _route("v2/models/{name}/infer", POST="_infer"),
    _route("v2/models/{name}/stats", GET="_stats"),
    _route("v2/models/{name}/config", GET="_config"),
    _route(_VERSIONED, GET="_metadata"),
    _route(f"{_VERSIONED}/ready", GET="_model_ready"),
    _route(f"{_VERSIONED}/infer", POST="_infer"),
    _route(f"{_VERSIONED}/stats", GET="_stats"),
    _route(f"{_VERSIONED}/config", GET="_config"),
    _route("metrics", GET="_metrics"),
    _route("openapi.json", GET="_openapi"),
)
# TF Serving's paths (``/v1/models/<name>[/versions/<v>][:predict]``) are routed by
# :mod:`.tfserving` itself, every method
_TFSERVING_PREFIX = "/v1/models/"
_TFSERVING = _Route((), {"*": "_tfserving"})


def _match(path: str) -> tuple[_Route | None, dict[str, str]]:
    """The route for ``path`` and the segments its template captured."""
    if path.startswith(_TFSERVING_PREFIX):
        return _TFSERVING, {}
    segments = path.strip("/").split("/")
    for route in _ROUTES:
        if len(route.template) != len(segments):
            continue
        params: dict[str, str] = {}
        for want, got in zip(route.template, segments, strict=True):
            if want.startswith("{"):
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            return route, params
    return None, {}


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
