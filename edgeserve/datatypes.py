"""Tensor datatypes: Open Inference Protocol names, numpy dtypes and runtime type names.

The OIP v2 datatype names are those of the Open Inference Protocol's "Tensor Data Types".
"""

from __future__ import annotations

from typing import Final

import numpy as np

from edgeserve.errors import InferenceInputError

__all__ = [
    "DATATYPES",
    "datatype_of",
    "from_onnx_elem_type",
    "from_ort_type",
    "itemsize",
    "to_numpy",
]

# OIP datatype -> numpy dtype. BYTES is variable-length and carried as an object array.
_TO_NUMPY: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
DATATYPES: Final[frozenset[str]] = frozenset(_TO_NUMPY)

_FROM_NUMPY: Final[dict[np.dtype, str]] = {
    dt: name for name, dt in _TO_NUMPY.items() if name != "BYTES"
}

# onnx.TensorProto.DataType values (onnx/onnx.proto), so core needs no onnx import.
_ONNX_ELEM: Final[dict[int, str]] = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
}

# ONNX Runtime NodeArg.type strings.
_ORT_TYPES: Final[dict[str, str]] = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def to_numpy(datatype: str) -> np.dtype:
    """Return the numpy dtype for an OIP datatype name.

    Raises:
        InferenceInputError: the name is not an OIP datatype.
    """
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise InferenceInputError(f"unknown datatype {datatype!r}") from None


def datatype_of(dtype: np.dtype | type) -> str:
    """Return the OIP datatype name for a numpy dtype.

    Raises:
        InferenceInputError: numpy dtype has no OIP equivalent.
    """
    dt = np.dtype(dtype)
    if dt.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _FROM_NUMPY[dt.newbyteorder("=")]
    except KeyError:
        raise InferenceInputError(f"numpy dtype {dt} has no OIP datatype") from None


def itemsize(datatype: str) -> int:
    """Bytes per element of a fixed-size datatype (BYTES has none and raises)."""
    if datatype == "BYTES":
        raise InferenceInputError("BYTES has no fixed element size")
    return to_numpy(datatype).itemsize


def from_onnx_elem_type(elem_type: int) -> str:
    """Map an ``onnx.TensorProto`` element type number to an OIP datatype name."""
    try:
        return _ONNX_ELEM[elem_type]
    except KeyError:
        raise InferenceInputError(f"ONNX element type {elem_type} has no OIP datatype") from None


def from_ort_type(ort_type: str) -> str:
    """Map an ONNX Runtime type string such as ``tensor(float)`` to an OIP datatype name."""
    try:
        return _ORT_TYPES[ort_type]
    except KeyError:
        raise InferenceInputError(f"ONNX Runtime type {ort_type} has no OIP datatype") from None
