"""``ModelInferRequest`` to arrays and arrays to ``ModelInferResponse`` (OIP v2 gRPC).

Follows the OIP gRPC spec ("Tensor Data", https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_grpc.md):
an input's data is either typed ``contents`` (the field named for its datatype) or, for every
input at once, ``raw_input_contents`` in input order with the binary tensor encoding of REST
(little-endian, BYTES elements 4-byte length prefixed). FP16 has no typed field and must be
raw. Outputs are always returned as ``raw_output_contents``, as Triton does; tritonclient reads
either. Every malformed tensor raises :class:`~edgeserve.errors.InferenceInputError` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from edgeserve.agent.grpc import inference_pb2 as pb
from edgeserve.agent.http.codec import InferRequest
from edgeserve.agent.http.tensors import check_shape, from_binary, to_binary
from edgeserve.agent.serving.classification import classification_k

from edgeserve.datatypes import DATATYPES, datatype_of, to_numpy
from edgeserve.errors import InferenceInputError

__all__ = ["decode_infer_request", "encode_infer_response", "parameter_value"]

# datatype -> InferTensorContents field (OIP gRPC spec, "InferTensorContents")
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(param: Any) -> Any:
    """The Python value of an ``InferParameter`` (None when none is set)."""
    which = param.WhichOneof("parameter_choice")
    return getattr(param, which) if which is not None else None


def decode_infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """Decode a ``ModelInferRequest`` into the agent's request form.

    Raises:
        InferenceInputError: no inputs, duplicate names, bad shapes or datatypes, raw contents
            for some inputs only, data that does not match its shape.
    """
    tensors = request.inputs
    if not tensors:
        raise InferenceInputError("'inputs' must be a non-empty list")
    raw = request.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise InferenceInputError(
            f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; "
            "give it for every input or for none"
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(tensors):
        name = tensor.name
        if not name:
            raise InferenceInputError(f"inputs[{index}]: 'name' must be a non-empty string")
        if name in inputs:
            raise InferenceInputError(f"input {name}: given twice")
        shape = check_shape(list(tensor.shape), name)
        datatype = tensor.datatype
        if datatype not in DATATYPES:
            raise InferenceInputError(f"input {name}: unknown datatype {datatype!r}")
        if raw:
            if tensor.HasField("contents"):
                raise InferenceInputError(
                    f"input {name}: both 'contents' and raw_input_contents given"
                )
            inputs[name] = from_binary(memoryview(raw[index]), shape, datatype, name)
        else:
            inputs[name] = _from_contents(tensor.contents, shape, datatype, name)
    outputs: dict[str, bool] | None = None
    classification: dict[str, int] = {}
    if request.outputs:
        outputs = {}
        for index, out in enumerate(request.outputs):
            if not out.name:
                raise InferenceInputError(f"outputs[{index}]: 'name' must be a non-empty string")
            outputs[out.name] = True
            if "classification" in out.parameters:
                value = parameter_value(out.parameters["classification"])
                classification[out.name] = classification_k(value, out.name)
    parameters = {key: parameter_value(value) for key, value in request.parameters.items()}
    return InferRequest(
        inputs, request.id or None, outputs, True, parameters, classification=classification
    )


def _from_contents(
    contents: pb.InferTensorContents, shape: tuple[int, ...], datatype: str, name: str
) -> np.ndarray:
    field = _CONTENTS.get(datatype)
    if field is None:
        raise InferenceInputError(
            f"input {name}: {datatype} has no typed contents field; send it in raw_input_contents"
        )
    values = getattr(contents, field)
    expected = math.prod(shape)
    if len(values) != expected:
        raise InferenceInputError(
            f"input {name}: {len(values)} values in contents.{field}, shape {list(shape)} "
            f"needs {expected}"
        )
    if datatype == "BYTES":
        return np.array(list(values), dtype=object).reshape(shape)
    want = to_numpy(datatype)
    if want.kind in "iu" and want.itemsize < 4 and len(values):
        # int_contents / uint_contents are 32-bit: INT8 300 must be refused, not wrapped
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(want)
        if wide.min() < info.min or wide.max() > info.max:
            raise InferenceInputError(f"input {name}: values do not fit {datatype}")
        return wide.astype(want).reshape(shape)
    return np.array(values, dtype=want).reshape(shape)


def encode_infer_response(
    model_name: str,
    model_version: int,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
    request_id: str | None,
) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with every output in ``raw_output_contents``."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=str(model_version), id=request_id or ""
    )
    raw = response.raw_output_contents
    for name, array, _binary in outputs:
        datatype = datatype_of(array.dtype)
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        raw.append(to_binary(array, datatype))
    return response
