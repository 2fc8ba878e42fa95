"""TF Serving's REST predict API for clients written against it.

``POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict`` with the row format
(``{"instances": [...]}`` -> ``{"predictions": [...]}``) or the columnar format
(``{"inputs": ...}`` -> ``{"outputs": ...}``), ``GET /v1/models/{m}[/versions/{v}]`` for
status and ``GET /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata`` for the
``serving_default`` signature_def clients read to build requests, as documented at
https://www.tensorflow.org/tfx/serving/api_rest ("Model status API", "Model Metadata API").
Errors are ``{"error": "..."}`` like TF Serving's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from edgeserve.agent.http.codec import dumps, parse_json
from edgeserve.agent.http.server import Request, Response
from edgeserve.agent.http.tensors import from_json
from edgeserve.agent.names import check_model_name, check_version
from edgeserve.agent.serving.core import Agent

from edgeserve.bundle.manifest import TensorSpec
from edgeserve.errors import InferenceInputError, NotFoundError

__all__ = ["handle_v1"]

_OFFLOAD_BYTES = 64 * 1024  # request bytes parsed in a worker thread beyond this
_OFFLOAD_ELEMENTS = 16 * 1024  # output elements encoded in a worker thread beyond this


async def handle_v1(agent: Agent, request: Request, key_header: str) -> Response:
    """Serve one ``/v1/models/...`` request.

    Raises:
        EdgeServeError: mapped to its HTTP status by the caller.
    """
    path = request.path[len("/v1/models/") :]
    verb = None
    if ":" in path:
        path, _, verb = path.rpartition(":")
    parts = path.strip("/").split("/")
    metadata = verb is None and len(parts) > 1 and parts[-1] == "metadata"
    if metadata:
        parts = parts[:-1]
    if len(parts) not in (1, 3) or (len(parts) == 3 and parts[1] not in ("versions", "labels")):
        raise NotFoundError(f"no route for {request.method} {request.path}")
    name = check_model_name(parts[0])
    version = check_version(parts[2]) if len(parts) == 3 else None
    if metadata and request.method == "GET":
        return _json(_metadata(agent.resolve(name, version, "metadata", count=False), name))
    if verb is None and request.method == "GET" and not metadata:
        model = agent.resolve(name, version, "status", count=False)
        return _json(
            {
                "model_version_status": [
                    {
                        "version": str(model.version),
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            }
        )
    if verb != "predict" or request.method != "POST":
        raise NotFoundError(f"no route for {request.method} {request.path} (use :predict)")
    key = request.headers.get(key_header)
    specs = agent.resolve(name, version, key, count=False).inputs
    loop = asyncio.get_running_loop()
    if len(request.body) > _OFFLOAD_BYTES:  # big bodies are parsed off the event loop
        rows, feeds = await loop.run_in_executor(agent.executor, _decode, request.body, specs)
    else:
        rows, feeds = _decode(request.body, specs)
    # resolve again with no await before submit: a hot swap cannot unload it in between
    model = agent.resolve(name, version, key)
    result = await model.infer(feeds)
    if sum(a.size for a in result.outputs.values()) > _OFFLOAD_ELEMENTS:
        body = await loop.run_in_executor(agent.executor, _encode, rows, result.outputs)
    else:
        body = _encode(rows, result.outputs)
    return Response(200, body)


# OIP datatype -> TensorFlow DataType enum name (tensorflow/core/framework/types.proto)
_TF_DTYPES = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}


def _metadata(model: Any, name: str) -> dict[str, Any]:
    """TF Serving's GetModelMetadata response as its REST API prints it (64-bit sizes as
    strings, the protobuf JSON mapping)."""

    def info(spec: TensorSpec) -> dict[str, Any]:
        dims = [{"size": str(d), "name": ""} for d in spec.shape]
        return {
            "dtype": _TF_DTYPES[spec.datatype],
            "tensor_shape": {"dim": dims, "unknown_rank": False},
            "name": spec.name,
        }

    signature = {
        "inputs": {s.name: info(s) for s in model.inputs},
        "outputs": {s.name: info(s) for s in model.outputs},
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {"serving_default": signature},
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
            }
        },
    }


def _decode(body: bytes, specs: tuple[TensorSpec, ...]) -> tuple[bool, dict[str, np.ndarray]]:
    """(row format?, feeds) from a predict body."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise InferenceInputError("request body must be a JSON object")
    if "instances" in doc:
        return True, _from_instances(doc["instances"], specs)
    if "inputs" in doc:
        return False, _from_columns(doc["inputs"], specs)
    raise InferenceInputError("body needs 'instances' (row format) or 'inputs' (columnar)")


def _encode(rows: bool, outputs: dict[str, np.ndarray]) -> bytes:
    """``{"predictions": ...}`` for the row format, ``{"outputs": ...}`` for columnar."""
    if rows:
        if len(outputs) == 1:
            return dumps({"predictions": next(iter(outputs.values())).tolist()})
        count = next(iter(outputs.values())).shape[0]
        return dumps(
            {"predictions": [{n: a[i].tolist() for n, a in outputs.items()} for i in range(count)]}
        )
    if len(outputs) == 1:
        return dumps({"outputs": next(iter(outputs.values())).tolist()})
    return dumps({"outputs": {n: a.tolist() for n, a in outputs.items()}})


def _tensor(value: Any, spec: TensorSpec) -> np.ndarray:
    try:
        shape = np.asarray(value).shape
    except (ValueError, TypeError, RecursionError):
        raise InferenceInputError(f"input {spec.name}: not a regular list of values") from None
    return from_json(value, tuple(shape), spec.datatype, spec.name)


def _from_instances(instances: Any, specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise InferenceInputError("'instances' must be a non-empty list")
    if len(specs) == 1 and not isinstance(instances[0], dict):
        return {specs[0].name: _tensor(instances, specs[0])}
    names = {s.name for s in specs}
    for i, row in enumerate(instances):
        if not isinstance(row, dict) or set(row) != names:
            raise InferenceInputError(
                f"instances[{i}] must be an object with exactly the inputs {sorted(names)}"
            )
    return {s.name: _tensor([row[s.name] for row in instances], s) for s in specs}


def _from_columns(inputs: Any, specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict):
        if len(specs) != 1:
            raise InferenceInputError("'inputs' must be an object naming each input")
        return {specs[0].name: _tensor(inputs, specs[0])}
    known = {s.name: s for s in specs}
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise InferenceInputError(f"unknown input(s) {', '.join(unknown)}")
    return {n: _tensor(v, known[n]) for n, v in inputs.items()}


def _json(value: Any) -> Response:
    return Response(200, dumps(value))
