"""Open Inference Protocol v2 request/response bodies: JSON and the binary tensor extension.

JSON bodies follow the OIP REST spec, "Inference Request JSON Object" and "Inference Response
JSON Object" (https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md).
The binary extension is Triton's "Binary Tensor Data Extension"
(https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md):
the header ``Inference-Header-Content-Length`` gives the JSON part's length; raw little-endian
tensors follow, in input order, each sized by its ``parameters.binary_data_size``; BYTES
elements are 4-byte little-endian length prefixed (tensor data: :mod:`.tensors`). The gRPC API
(:mod:`edgeserve.agent.grpc`) shares the tensor helpers and output selection. Every malformed
body becomes an :class:`~edgeserve.errors.InferenceInputError` naming the problem (HTTP 400).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeserve.agent.http.tensors import check_shape, from_binary, from_json, to_binary
from edgeserve.agent.serving.classification import classification_k, classify

from edgeserve.datatypes import DATATYPES, datatype_of
from edgeserve.errors import InferenceInputError

__all__ = [
    "InferRequest",
    "decode_request",
    "dumps",
    "encode_response",
    "parse_json",
    "select_outputs",
    "timeout_s",
]


@dataclass
class InferRequest:
    """A decoded inference request.

    Attributes:
        inputs: input name -> array.
        id: the request id, echoed in the response.
        outputs: requested output name -> wants binary; None = every output.
        binary_output: default for outputs not listed (``parameters.binary_data_output``).
        parameters: the request's ``parameters`` (``timeout`` in microseconds).
        classification: requested output name -> k, for Triton's classification extension.
    """

    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: dict[str, bool] | None = None
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    classification: dict[str, int] = field(default_factory=dict)


try:  # orjson parses the float arrays of a request ~10x faster than the stdlib (agent extra)
    import orjson as _orjson
except ImportError:  # pragma: no cover - the agent extra installs it
    _orjson = None


def dumps(value: Any) -> bytes:
    """Serialise a response body (orjson when installed)."""
    if _orjson is not None:
        return _orjson.dumps(value)
    return json.dumps(value, separators=(",", ":")).encode()


def parse_json(data: bytes, what: str = "request body") -> Any:
    """Parse JSON or raise InferenceInputError naming the problem."""
    try:
        if _orjson is not None:
            return _orjson.loads(data)
        return json.loads(data)
    except UnicodeDecodeError:
        raise InferenceInputError(f"{what} is not UTF-8") from None
    except ValueError as exc:
        raise InferenceInputError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InferenceInputError(f"{what} is nested too deeply") from None


def decode_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Decode an OIP v2 inference request body.

    Args:
        body: the whole HTTP body.
        header_length: the ``Inference-Header-Content-Length`` header, if present.

    Raises:
        InferenceInputError: malformed JSON, bad fields, data that does not match its shape
            or datatype, binary lengths that do not add up.
    """
    if header_length is not None:
        try:
            json_len = int(header_length)
        except ValueError:
            raise InferenceInputError(
                f"Inference-Header-Content-Length {header_length!r} is not an integer"
            ) from None
        if not 0 <= json_len <= len(body):
            raise InferenceInputError(
                f"Inference-Header-Content-Length {json_len} is outside the {len(body)} byte body"
            )
        doc, binary = parse_json(body[:json_len]), memoryview(body)[json_len:]
    else:
        doc, binary = parse_json(body), memoryview(b"")
    if not isinstance(doc, dict):
        raise InferenceInputError("request body must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InferenceInputError("'inputs' must be a non-empty list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InferenceInputError(f"inputs[{index}] must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InferenceInputError(f"inputs[{index}]: 'name' must be a non-empty string")
        if name in inputs:
            raise InferenceInputError(f"input {name}: given twice")
        shape = check_shape(item.get("shape"), name)
        datatype = item.get("datatype")
        if datatype not in DATATYPES:
            raise InferenceInputError(f"input {name}: unknown datatype {datatype!r}")
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise InferenceInputError(f"input {name}: 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InferenceInputError(f"input {name}: binary_data_size must be an integer")
            if offset + size > len(binary):
                raise InferenceInputError(
                    f"input {name}: binary_data_size {size} runs past the body's "
                    f"{len(binary)} binary bytes"
                )
            inputs[name] = from_binary(binary[offset : offset + size], shape, datatype, name)
            offset += size
        elif "data" in item:
            inputs[name] = from_json(item["data"], shape, datatype, name)
        else:
            raise InferenceInputError(f"input {name}: no 'data' and no binary_data_size")
    if offset != len(binary):
        raise InferenceInputError(
            f"{len(binary) - offset} binary bytes after the inputs are not claimed by any "
            "binary_data_size"
        )
    outputs, binary_default, classification = _requested_outputs(doc)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InferenceInputError("'id' must be a string")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InferenceInputError("'parameters' must be an object")
    return InferRequest(inputs, request_id, outputs, binary_default, params, classification)


def _requested_outputs(
    doc: Mapping[str, Any],
) -> tuple[dict[str, bool] | None, bool, dict[str, int]]:
    params = doc.get("parameters") or {}
    binary_default = bool(isinstance(params, dict) and params.get("binary_data_output"))
    raw = doc.get("outputs")
    if raw is None:
        return None, binary_default, {}
    if not isinstance(raw, list):
        raise InferenceInputError("'outputs' must be a list")
    wanted: dict[str, bool] = {}
    classification: dict[str, int] = {}
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InferenceInputError(f"outputs[{index}] must be an object with a 'name'")
        oparams = item.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise InferenceInputError(f"outputs[{index}]: 'parameters' must be an object")
        if "classification" in oparams:
            k = classification_k(oparams["classification"], item["name"])
            classification[item["name"]] = k
        wanted[item["name"]] = bool(oparams.get("binary_data", binary_default))
    return wanted, binary_default, classification


def timeout_s(parameters: Mapping[str, Any]) -> float | None:
    """Triton's per-request ``parameters.timeout`` (microseconds) as seconds, or None.

    Raises:
        InferenceInputError: not a positive integer.
    """
    value = parameters.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InferenceInputError("parameters.timeout must be a positive integer (microseconds)")
    return value / 1e6


def select_outputs(
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
    labels: Mapping[str, Sequence[str]] | None = None,
    batched: bool = True,
) -> list[tuple[str, np.ndarray, bool]]:
    """The outputs a request asked for, in its order, as (name, array, binary?); outputs
    requested with ``classification`` are replaced by their top-k BYTES entries.

    Args:
        outputs: every output of the execution.
        request: the decoded request.
        labels: output name -> class labels (the bundle's ``labels`` file).
        batched: the model has a batch dimension (classification per row).

    Raises:
        InferenceInputError: an unknown output was asked for, or classification of a
            non-numeric output.
    """
    if request.outputs is None:
        return [(n, a, request.binary_output) for n, a in outputs.items()]
    unknown = sorted(set(request.outputs) - set(outputs))
    if unknown:
        raise InferenceInputError(
            f"unknown output(s) {', '.join(unknown)}; model has {', '.join(outputs)}"
        )
    selected = []
    for name, binary in request.outputs.items():
        array = outputs[name]
        k = request.classification.get(name)
        if k is not None:
            array = classify(array, k, (labels or {}).get(name), batched, name)
        selected.append((name, array, binary))
    return selected


def encode_response(
    model_name: str,
    model_version: int,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
    labels: Mapping[str, Sequence[str]] | None = None,
    batched: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """Encode an inference response (JSON, or JSON + binary outputs when asked).

    Returns:
        (body, extra headers): ``Inference-Header-Content-Length`` when binary parts follow.

    Raises:
        InferenceInputError: see :func:`select_outputs`.
    """
    selected = select_outputs(outputs, request, labels, batched)
    parts: list[bytes] = []
    out_docs = []
    for name, array, binary in selected:
        datatype = datatype_of(array.dtype)
        doc: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = to_binary(array, datatype)
            doc["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        elif datatype == "BYTES":
            doc["data"] = [_text(v) for v in array.reshape(-1)]
        else:
            doc["data"] = array.reshape(-1).tolist()
        out_docs.append(doc)
    body: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(model_version),
        "outputs": out_docs,
    }
    if request.id is not None:
        body["id"] = request.id
    header = dumps(body)
    if not parts:
        return header, {}
    return header + b"".join(parts), {"Inference-Header-Content-Length": str(len(header))}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
