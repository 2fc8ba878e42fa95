"""Tensor data in Open Inference Protocol bodies: a request's ``shape`` checked and bounded,
``data`` as JSON (nested or flat lists) and as the binary tensor extension's raw little-endian
bytes (BYTES elements 4-byte length prefixed), both ways. The REST codec (:mod:`.codec`), TF
Serving's API (:mod:`.tfserving`) and the gRPC API (:mod:`edgeserve.agent.grpc`) share these.
Every malformed tensor becomes an :class:`~edgeserve.errors.InferenceInputError` naming the
input.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from edgeserve.datatypes import to_numpy
from edgeserve.errors import InferenceInputError

__all__ = ["check_shape", "from_binary", "from_json", "to_binary"]

_MAX_RANK = 16
_MAX_ELEMENTS = 1 << 28


def check_shape(raw: Any, name: str) -> tuple[int, ...]:
    """A request's shape for input ``name``: at most 16 non-negative dims, bounded in size.

    Raises:
        InferenceInputError: anything else.
    """
    if not isinstance(raw, list) or len(raw) > _MAX_RANK:
        raise InferenceInputError(f"input {name}: 'shape' must be a list of at most 16 dims")
    for dim in raw:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InferenceInputError(f"input {name}: bad dimension {dim!r} in shape {raw}")
    if math.prod(raw) > _MAX_ELEMENTS:
        raise InferenceInputError(f"input {name}: shape {raw} is too large")
    return tuple(raw)


def from_json(data: Any, shape: tuple[int, ...], datatype: str, name: str) -> np.ndarray:
    """An input tensor from its JSON ``data`` (nested or flat), cast exactly to ``datatype``.

    Raises:
        InferenceInputError: not rectangular, wrong kind of values, values that do not fit
            the datatype, or a count that does not match the shape.
    """
    expected = math.prod(shape)
    if datatype == "BYTES":
        flat = _flatten(data, name)
        if not all(isinstance(v, str) for v in flat):
            raise InferenceInputError(f"input {name}: BYTES data must be strings")
        array = np.array([v.encode() for v in flat], dtype=object)
    else:
        try:
            raw = np.asarray(data)
        except (ValueError, TypeError, RecursionError):
            raise InferenceInputError(
                f"input {name}: 'data' is not a regular (rectangular) list of numbers"
            ) from None
        kind = raw.dtype.kind
        want = to_numpy(datatype)
        if raw.size and (
            kind not in "biuf"
            or (want.kind in "iu" and kind == "f")
            or (want.kind == "b" and kind != "b")
        ):
            what = {"b": "booleans", "i": "integers", "u": "integers"}.get(want.kind, "numbers")
            raise InferenceInputError(f"input {name}: datatype {datatype} needs {what} in 'data'")
        try:
            array = raw.astype(want, casting="unsafe") if want.kind == "f" else _exact(raw, want)
        except (ValueError, TypeError, OverflowError):
            raise InferenceInputError(f"input {name}: values do not fit {datatype}") from None
        array = array.reshape(-1)
    if array.size != expected:
        raise InferenceInputError(
            f"input {name}: {array.size} values in 'data', shape {list(shape)} needs {expected}"
        )
    return array.reshape(shape)


def _exact(raw: np.ndarray, want: np.dtype) -> np.ndarray:
    """Cast integers/booleans, refusing values that do not fit (300 as UINT8)."""
    if raw.size and want.kind in "iu":
        info = np.iinfo(want)
        if raw.min() < info.min or raw.max() > info.max:
            raise OverflowError
    return raw.astype(want)


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                if len(stack) > _MAX_RANK:
                    raise InferenceInputError(f"input {name}: 'data' is nested too deeply")
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def from_binary(buf: memoryview, shape: tuple[int, ...], datatype: str, name: str) -> np.ndarray:
    """An input tensor from its raw little-endian bytes (BYTES: 4-byte length prefixes).

    Raises:
        InferenceInputError: the byte count does not match the shape and datatype.
    """
    expected = math.prod(shape)
    if datatype == "BYTES":
        items, pos = [], 0
        while pos < len(buf):
            if pos + 4 > len(buf):
                raise InferenceInputError(f"input {name}: truncated BYTES length prefix")
            (length,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if pos + length > len(buf):
                raise InferenceInputError(f"input {name}: BYTES element runs past its data")
            items.append(bytes(buf[pos : pos + length]))
            pos += length
        if len(items) != expected:
            raise InferenceInputError(
                f"input {name}: {len(items)} BYTES elements, shape {list(shape)} needs {expected}"
            )
        return np.array(items, dtype=object).reshape(shape)
    dtype = to_numpy(datatype).newbyteorder("<")
    if len(buf) != expected * dtype.itemsize:
        raise InferenceInputError(
            f"input {name}: binary_data_size {len(buf)} bytes, shape {list(shape)} of "
            f"{datatype} needs {expected * dtype.itemsize}"
        )
    # copy: the request buffer is not kept alive and runtimes want owned, aligned memory
    return np.frombuffer(buf, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    """An output tensor as raw little-endian bytes (BYTES: 4-byte length prefixes)."""
    if datatype == "BYTES":
        chunks = []
        for value in array.reshape(-1):
            raw = value if isinstance(value, bytes) else str(value).encode()
            chunks.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(chunks)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
