"""ONNX passes: shape fixing, graph optimization, fp16, ORT format, loading checks.

Quantization is in :mod:`edgeserve.converter.quantize`.

Each pass reads a model file and writes a new one; the pipeline chains them by the target's
fields (:mod:`edgeserve.converter.targets`). References:

- ORT graph optimizations and offline saving: onnxruntime.ai/docs/performance/
  model-optimizations/graph-optimizations.html ("Basic" = semantics-preserving, portable).
- Quantization (QDQ, per-channel, calibration methods, pre-processing with symbolic shape
  inference): onnxruntime.ai/docs/performance/model-optimizations/quantization.html.
- QNN EP QDQ requirements: onnxruntime.ai/docs/execution-providers/QNN-ExecutionProvider.html.
- ORT format: onnxruntime.ai/docs/performance/model-optimizations/ort-format-models.html.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from edgeserve.converter.onnx_files import EXTERNAL_DATA_THRESHOLD_BYTES, model_bytes

from edgeserve.errors import ConfigError, ConversionError, ModelError, UnsupportedOpError

__all__ = [
    "check_loads",
    "fix_input_shapes",
    "open_session",
    "optimize_fp32",
    "to_fp16",
    "to_ort_format",
]

_NO_KERNEL_RE: Final = re.compile(r"implementation for (\w+)\((\d+)\) node with name '([^']*)'")
# ONNX Runtime's graph check: "Type Error: Type 'tensor(float16)' of input parameter (x) of
# operator (Celu) in node (n) is invalid." - the op's schema does not allow that type.
_TYPE_ERROR_RE: Final = re.compile(
    r"Type Error: Type '([^']+)' of \w+ parameter \([^)]*\) "
    r"of operator \((\w+)\) in node \(([^)]*)\)"
)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence third-party warnings (onnx, ORT quantization) inside a pass."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def fix_input_shapes(model: Any, shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """Pin dynamic input dimensions, then redo shape inference.

    Static quantization and NPU compilers need known shapes.

    Args:
        model: an ``onnx.ModelProto`` (changed in place and returned).
        shapes: input name -> full shape; only dimensions that are dynamic in the model change.
    """
    import onnx

    for value in model.graph.input:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, shapes[value.name], strict=True):
            # -1 = keep it dynamic (the batch axis of static int8); fixed dims stay as they are
            if size > 0 and not (dim.HasField("dim_value") and dim.dim_value > 0):
                dim.Clear()
                dim.dim_value = int(size)
    del model.graph.value_info[:]
    with _quiet():
        try:
            return onnx.shape_inference.infer_shapes(model)
        except Exception as exc:  # InferenceError: shapes that cannot be
            raise ConfigError(f"fixed input shapes do not fit the model: {exc}") from exc


def optimize_fp32(src: Path, dst: Path) -> None:
    """Basic-level ORT graph optimizations (constant folding, redundant node removal), saved.

    Basic optimizations are semantics-preserving and produce only ONNX ops, so the result stays
    portable across ORT builds and execution providers.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    if model_bytes(src) > EXTERNAL_DATA_THRESHOLD_BYTES:  # over protobuf's 2 GiB
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", f"{dst.name}.data"
        )
    _session(src, options)


def to_ort_format(src: Path, dst: Path) -> None:
    """Convert an ONNX file to the ORT flatbuffer format, optimized for the CPU provider.

    A full ONNX Runtime does not re-optimize an ORT-format model at load, so the fusions must
    be baked in: "extended" level fuses QDQ into int8 kernels (measured: 0.11 ms vs 0.70 ms at
    basic level on the benchmark CNN) while staying free of the x86-only NCHWc layout that the
    "all" level adds (ORT docs, graph-optimizations.html and ort-format-models.html).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    options.add_session_config_entry("session.save_model_format", "ORT")
    _session(src, options)


def open_session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session on ``path`` with ``threads`` intra-op threads (0 = default).

    Raises:
        UnsupportedOpError: an op without a kernel (named).
        ModelError: any other load failure.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return _session(path, options)


def _session(
    path: Path, options: Any, providers: tuple[str, ...] = ("CPUExecutionProvider",)
) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as exc:  # ORT's Fail/NotImplemented/InvalidGraph
        raise _ort_error(exc, path) from exc


def _ort_error(exc: BaseException, path: Path) -> Exception:
    text = " ".join(str(exc).split())
    match = _NO_KERNEL_RE.search(text)
    if match:
        op, version, node = match.groups()
        return UnsupportedOpError(
            f"op {op} (opset {version}, node {node!r}) has no ONNX Runtime CPU kernel for "
            "these types"
        )
    match = _TYPE_ERROR_RE.search(text)
    if match:
        dtype, op, node = match.groups()
        return UnsupportedOpError(f"op {op} (node {node!r}) does not accept {dtype}")
    return ModelError(f"onnxruntime cannot load {path.name}: {text[:300]}")


def check_loads(path: Path) -> None:
    """Open the file in ONNX Runtime on the CPU; raise if it refuses.

    Raises:
        UnsupportedOpError: an op without a kernel (named).
        ModelError: any other load failure.
    """
    import onnxruntime as ort

    _session(path, ort.SessionOptions())


def to_fp16(src: Path, dst: Path) -> str:
    """Convert to fp16 with fp32 inputs/outputs; check ORT loads it, repair or fall back.

    onnxconverter-common 1.16 can emit graphs ONNX Runtime refuses (mismatched Cast types,
    fp16 inputs to ops without fp16 kernels). Attempts, in order: onnxconverter-common;
    onnxconverter-common with the refused op types blocked (kept fp32); ONNX Runtime's own
    converter (``onnxruntime.transformers.float16``).

    Returns:
        Which converter produced the file (recorded in the manifest's converter options).

    Raises:
        ConversionError: no attempt produced a model ORT loads.
    """
    import onnx

    model = onnx.load(str(src))
    errors: list[str] = []
    blocked: list[str] = []
    for attempt in ("onnxconverter-common", "onnxconverter-common+block", "onnxruntime"):
        if attempt.endswith("+block") and not blocked:
            continue
        try:
            with _quiet():
                converted = _fp16_attempt(model, attempt, blocked)
            onnx.save(converted, str(dst))
            check_loads(dst)
            return attempt if not blocked else f"{attempt} (kept fp32: {', '.join(blocked)})"
        except UnsupportedOpError as exc:
            errors.append(f"{attempt}: {exc}")
            op = str(exc).split()[1]
            if op not in blocked:
                blocked.append(op)
        except Exception as exc:
            errors.append(f"{attempt}: {_first(exc)}")
    dst.unlink(missing_ok=True)
    raise ConversionError(
        "fp16 conversion: ONNX Runtime refuses every attempt: " + "; ".join(errors)
    )


def _fp16_attempt(model: Any, attempt: str, blocked: list[str]) -> Any:
    if attempt.startswith("onnxconverter-common"):
        from onnxconverter_common import float16

        block = list(float16.DEFAULT_OP_BLOCK_LIST) + blocked
        return float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked or None)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
