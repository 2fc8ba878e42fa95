"""TFLite passes: Keras / SavedModel -> ``.tflite`` at fp32, fp16, dynamic or full int8
(PyTorch sources go through :mod:`edgeserve.converter.torch_tflite`).

Follows the TFLite post-training quantization guide
(ai.google.dev/edge/litert/models/post_training_quantization): fp16 = ``Optimize.DEFAULT`` with
``supported_types=[float16]``; dynamic range = ``Optimize.DEFAULT`` alone; full integer =
``Optimize.DEFAULT`` + a representative dataset + ``TFLITE_BUILTINS_INT8`` (every op must have
an int8 kernel, else conversion fails) and optionally int8 input/output.

Only builtin ops are allowed (no ``SELECT_TF_OPS``): device runtimes (tflite-runtime, LiteRT)
ship without the Flex delegate, so a model needing it would not load there.

ONNX -> TFLite is not built in: onnx2tf 1.29.24 (the current release) pins exact old releases
(``tensorflow==2.19.0``, ``numpy==1.26.4``, ``onnx==1.19.1``, ``onnxruntime==1.23.0``,
``protobuf==4.25.5``, ``ai-edge-litert==2.1.0``); installing it would downgrade every one of
them under the other paths. The error says how to do it in a separate environment.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
from edgeserve.converter.calibration import Dataset
from edgeserve.converter.loaders import SourceModel, quiet_native_stderr
from edgeserve.converter.targets import Target

from edgeserve.errors import ConfigError, ConversionError, UnsupportedOpError

__all__ = ["ONNX_TO_TFLITE_HELP", "convert_tflite", "io_quantization"]

CALIBRATION_MAX_ROWS: Final = 512  # rows fed to the representative dataset
ONNX_TO_TFLITE_HELP: Final = (
    "ONNX -> TFLite is not built in (onnx2tf 1.29.24 pins tensorflow==2.19.0, numpy==1.26.4, "
    "onnx==1.19.1, onnxruntime==1.23.0, protobuf==4.25.5); convert in a "
    "separate venv: `python -m venv /tmp/o2t && /tmp/o2t/bin/pip install onnx2tf && "
    "/tmp/o2t/bin/onnx2tf -i MODEL.onnx -o saved_model`, then "
    "`edgeserve convert saved_model --target tflite-...`"
)
# TFLite converter messages name unsupported TensorFlow ops as "tf.OpName" (CamelCase); its
# own dialect ("tfl.custom_tf", "tf.entry_function") is plumbing, not the culprit.
_OP_RE: Final = re.compile(r"\b(tf\.[A-Z][A-Za-z0-9_]+)")


def convert_tflite(
    source: SourceModel, target: Target, calibration: Dataset | None, io_type: str
) -> bytes:
    """Convert a Keras model, SavedModel or PyTorch program to a TFLite flatbuffer.

    Args:
        source: a ``keras``, ``savedmodel`` or ``torch`` source.
        target: a ``tflite-*`` target.
        calibration: representative rows (required for ``int8``).
        io_type: ``float`` or ``int8`` model inputs/outputs (``int8`` target only).

    Returns:
        The ``.tflite`` bytes.

    Raises:
        ConfigError: the source cannot reach TFLite (ONNX) or calibration is missing.
        UnsupportedOpError: an op without a TFLite builtin (int8) kernel, named.
        ConversionError: any other converter failure.
    """
    if source.kind == "onnx":
        raise ConfigError(ONNX_TO_TFLITE_HELP)
    if source.kind == "torch":
        from edgeserve.converter.torch_tflite import torch_to_tflite

        return torch_to_tflite(source, target, calibration)
    if source.kind not in ("keras", "savedmodel"):
        raise ConfigError(f"cannot convert a {source.kind} model to {target.name}")
    import tensorflow as tf

    if source.kind == "keras":
        converter = tf.lite.TFLiteConverter.from_keras_model(source.handle)
    else:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source.path))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if target.precision in ("fp16", "dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if target.precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if target.precision == "int8":
        if calibration is None:
            raise ConfigError(f"{target.name} needs --calibration data")
        converter.representative_dataset = lambda: _representative(source, calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        # Keras' export prints its endpoints on stdout, which carries only our report.
        with (
            warnings.catch_warnings(),
            quiet_native_stderr(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")  # TF's converter warns about statistics it infers
            data: bytes = converter.convert()
    except Exception as exc:
        raise _converter_error(exc, target) from exc
    return data


def _representative(source: SourceModel, data: Dataset) -> Iterator[list[np.ndarray]]:
    # One row per step, inputs in the model's order (TFLite converter API contract).
    n = min(CALIBRATION_MAX_ROWS, next(iter(data.values())).shape[0])
    for i in range(n):
        yield [data[spec.name][i : i + 1] for spec in source.inputs]


def _converter_error(exc: BaseException, target: Target) -> Exception:
    text = " ".join(str(exc).split())
    if "not supported" in text or "failed to legalize" in text.lower() or "Flex" in text:
        ops = sorted(set(_OP_RE.findall(text)))
        if ops:
            return UnsupportedOpError(
                f"{target.name} cannot take op(s) {', '.join(ops[:5])} "
                "(no TFLite builtin kernel; Flex ops are not available on devices)"
            )
    return ConversionError(f"TFLite conversion to {target.name} failed: {text[:300]}")


def io_quantization(interp: Any) -> dict[str, dict[str, float]]:
    """``{input/output name: {"scale", "zero_point"}}`` for quantized inputs/outputs of a
    model, named as :func:`~edgeserve.converter.loaders.tflite_io` names them."""
    from edgeserve.runtimes.tflite import io_names

    in_names, out_names = io_names(interp)
    names = {**in_names, **out_names}
    out: dict[str, dict[str, float]] = {}
    for d in [*interp.get_input_details(), *interp.get_output_details()]:
        scale, zero = d["quantization"]
        if np.dtype(d["dtype"]).kind in "iu" and scale:
            out[names[d["index"]]] = {"scale": float(scale), "zero_point": int(zero)}
    return out
