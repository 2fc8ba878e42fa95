"""The RPC handlers of ``inference.GRPCInferenceService``, over the same agent as REST.

Each handler does what its REST route does (:mod:`edgeserve.agent.http.routes`, :mod:`..views`):
``ModelInfer`` resolves the model (A/B key from the request metadata, as REST reads it from a
header), runs through the version's batcher with its metrics, and answers raw outputs. Errors
become gRPC status codes by whose fault they are, each with the same message REST gives
(https://grpc.github.io/grpc/core/md_doc_statuscodes.html): bad input INVALID_ARGUMENT, unknown
model/version NOT_FOUND, not ready / queue full / timed out UNAVAILABLE, a failing model
INTERNAL. Methods not declared in ``inference.proto`` (shared memory, trace and log settings)
answer UNIMPLEMENTED. A handler takes the request message and the call's metadata (lower-case
keys) and raises our errors; :class:`~.server.GrpcServer` turns them into the status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from edgeserve.agent.grpc import inference_pb2 as pb
from edgeserve.agent.grpc.status import RpcError, Status
from edgeserve.agent.grpc.tensors import decode_infer_request, encode_infer_response
from edgeserve.agent.http.codec import select_outputs, timeout_s
from edgeserve.agent.names import check_model_name, check_version
from edgeserve.agent.serving.core import Agent
from edgeserve.agent.serving.views import config_view, metadata_view, server_view, stats_view
from google.protobuf import json_format

from edgeserve.errors import (
    ConfigError,
    EdgeServeError,
    InferenceInputError,
    NotFoundError,
    UnavailableError,
)

__all__ = ["InferenceService", "status_code"]

log = logging.getLogger(__name__)

# requests of one ModelStreamInfer stream in flight at once; the stream reads no further
# until one finishes (back-pressure instead of an unbounded task list)
_STREAM_IN_FLIGHT = 64


def status_code(exc: EdgeServeError) -> Status:
    """The gRPC status for one of our errors (the counterpart of its ``http_status``)."""
    if isinstance(exc, (InferenceInputError, ConfigError)):
        return Status.INVALID_ARGUMENT
    if isinstance(exc, NotFoundError):
        return Status.NOT_FOUND
    if isinstance(exc, UnavailableError):
        return Status.UNAVAILABLE
    return _BY_HTTP_STATUS.get(exc.http_status, Status.INTERNAL)


# any other error of ours by its HTTP status (an invalid model name is a 400)
_BY_HTTP_STATUS = {
    400: Status.INVALID_ARGUMENT,
    404: Status.NOT_FOUND,
    503: Status.UNAVAILABLE,
}

Metadata = dict[str, str]


def _checked(name: str, version: str = "") -> tuple[str, str | None]:
    """The request's model name and version (None when empty), refused before any lookup when
    they could not exist, under the same rules as REST paths (:mod:`edgeserve.agent.names`)."""
    return check_model_name(name), check_version(version) if version else None


class InferenceService:
    """The handlers, one per RPC of the service, named as the RPCs are."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._key_header = agent.config.key_header

    # -- health and metadata ---------------------------------------------------------------

    async def ServerLive(self, request: Any, metadata: Metadata) -> pb.ServerLiveResponse:
        """Always live while the process serves."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, metadata: Metadata) -> pb.ServerReadyResponse:
        """Ready once the agent has loaded what the store asks for."""
        return pb.ServerReadyResponse(ready=self.agent.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, metadata: Metadata
    ) -> pb.ModelReadyResponse:
        """Whether a request for the model (version) would be served now."""
        # like Triton: an unknown model is "not ready", not an error (an invalid name is)
        name, version = _checked(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.agent.model_ready(name, version))

    async def ServerMetadata(self, request: Any, metadata: Metadata) -> pb.ServerMetadataResponse:
        """Name, version and the extensions the agent implements."""
        return pb.ServerMetadataResponse(**server_view())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, metadata: Metadata
    ) -> pb.ModelMetadataResponse:
        """OIP v2 model metadata (what REST's ``GET /v2/models/{m}`` answers)."""
        view = metadata_view(self.agent, *_checked(request.name, request.version))
        return json_format.ParseDict(view, pb.ModelMetadataResponse())

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, metadata: Metadata
    ) -> pb.ModelConfigResponse:
        """Triton's model configuration (:mod:`edgeserve.agent.serving.tritonconfig`)."""
        view = config_view(self.agent, *_checked(request.name, request.version))
        return pb.ModelConfigResponse(config=json_format.ParseDict(view, pb.ModelConfig()))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, metadata: Metadata
    ) -> pb.ModelStatisticsResponse:
        """Triton's statistics extension: counters since each version loaded."""
        name, version = _checked(request.name, request.version) if request.name else (None, None)
        stats = stats_view(self.agent, name, version)
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    # -- repository ------------------------------------------------------------------------

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, metadata: Metadata
    ) -> pb.RepositoryIndexResponse:
        """Every installed version with its state (only ready ones on request)."""
        rows = self.agent.index()
        if request.ready:
            rows = [r for r in rows if r["state"] == "READY"]
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**r) for r in rows]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, metadata: Metadata
    ) -> pb.RepositoryModelLoadResponse:
        """(Re)load a model per its policy; override parameters are refused."""
        _no_load_parameters(request.parameters)
        await self.agent.load(check_model_name(request.model_name))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, metadata: Metadata
    ) -> pb.RepositoryModelUnloadResponse:
        """Unload every version of a model until it is loaded again."""
        await self.agent.unload(check_model_name(request.model_name))
        return pb.RepositoryModelUnloadResponse()

    # -- inference -------------------------------------------------------------------------

    async def ModelInfer(
        self, request: pb.ModelInferRequest, metadata: Metadata
    ) -> pb.ModelInferResponse:
        """One inference through the model version's batcher."""
        return await self._infer(request, metadata)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], metadata: Metadata
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's streaming inference: requests run concurrently (so they batch), each
        answered when done; a failed request answers ``error_message`` and the stream goes on."""
        done: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(_STREAM_IN_FLIGHT)
        running: set[asyncio.Task] = set()

        async def one(request: pb.ModelInferRequest) -> None:
            try:
                response = await self._infer(request, metadata)
                await done.put(pb.ModelStreamInferResponse(infer_response=response))
            except EdgeServeError as exc:
                await done.put(pb.ModelStreamInferResponse(error_message=str(exc)))
            except Exception:  # a bug must not leave the client waiting for this answer
                log.exception("stream inference failed")
                await done.put(pb.ModelStreamInferResponse(error_message="internal error"))
            finally:
                slots.release()

        failed: list[RpcError] = []

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(one(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.gather(*list(running))
            except RpcError as exc:  # a malformed request message ends the stream with it
                failed.append(exc)
            finally:
                await done.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await done.get()) is not None:
                yield item
            if failed:
                raise failed[0]
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def _infer(
        self, request: pb.ModelInferRequest, metadata: Metadata
    ) -> pb.ModelInferResponse:
        name, version = _checked(request.model_name, request.model_version)
        decoded = decode_infer_request(request)
        # resolve after decoding with no await before submit (a hot swap cannot slip between)
        model = self.agent.resolve(name, version, metadata.get(self._key_header))
        result = await model.infer(decoded.inputs, timeout_s(decoded.parameters))
        try:
            selected = select_outputs(result.outputs, decoded, model.labels, model.has_batch_dim)
        except InferenceInputError:
            model.count_failure("bad_input")
            raise
        return encode_infer_response(model.name, model.version, selected, decoded.id)


def _no_load_parameters(parameters: Any) -> None:
    if len(parameters):
        raise ConfigError(
            "repository load parameters (config or file overrides) are not supported: "
            "install a new bundle version instead"
        )
