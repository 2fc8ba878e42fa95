"""Conversion targets, kept as data: one frozen record per preset, one table.

A target names the output format, the precision, the execution providers the agent should try
(in order, ONNX Runtime names) and the quantization settings. The passes in
:mod:`edgeserve.converter.onnx_passes` and :mod:`edgeserve.converter.tflite_passes` read these
fields; nothing else branches on a target's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from edgeserve.errors import ConfigError

__all__ = ["PRECISIONS", "TARGETS", "Target", "family_members", "get_target", "sibling"]

PRECISIONS: Final = ("fp32", "fp16", "int8", "dynamic", "as-is")
_CPU: Final = ("CPUExecutionProvider",)
_GPU: Final = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# QNN first (Qualcomm Hexagon NPU), then OpenVINO (Intel NPU/GPU), then the CPU.
_NPU: Final = ("QNNExecutionProvider", "OpenVINOExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class Target:
    """One conversion preset.

    Attributes:
        name: what ``--target`` takes.
        family: targets that differ only by precision (``--precision`` moves within it).
        format: bundle format, ``onnx`` | ``ort`` | ``tflite``.
        precision: ``fp32`` | ``fp16`` | ``int8`` | ``dynamic`` | ``as-is`` (unchanged).
        providers: ONNX Runtime execution providers in order (``("tflite",)`` for TFLite).
        description: one line for ``--list-targets``.
        needs_calibration: static quantization; ``--calibration`` data is required.
        static_shapes: every input dimension is fixed (NPU compilers need it).
        activation_type: ONNX static quantization activation type (``QUInt8``, ``QInt8``,
            ``QUInt16``).
        weight_type: ONNX quantization weight type.
        per_channel: per-channel weight scales.
    """

    name: str
    family: str
    format: str
    precision: str
    providers: tuple[str, ...]
    description: str
    needs_calibration: bool = False
    static_shapes: bool = False
    activation_type: str = "QInt8"
    weight_type: str = "QInt8"
    per_channel: bool = False

    @property
    def is_tflite(self) -> bool:
        """True when the output is a ``.tflite`` flatbuffer."""
        return self.format == "tflite"


TARGETS: Final[dict[str, Target]] = {
    t.name: t
    for t in (
        Target(
            "onnx-cpu-fp32", "onnx-cpu", "onnx", "fp32", _CPU,
            "ONNX fp32, basic graph optimizations only (portable across ORT builds)",
        ),
        # QDQ with signed int8 activations and per-channel signed weights: ORT's recommended
        # CPU configuration (onnxruntime.ai/docs/performance/model-optimizations/quantization.html,
        # "Quantization on CPU": S8S8 with QDQ is the default, per-channel for Conv/MatMul).
        Target(
            "onnx-cpu-int8", "onnx-cpu", "onnx", "int8", _CPU,
            "ONNX static int8 QDQ, per-channel, calibrated (MinMax; Entropy/Percentile)",
            needs_calibration=True, per_channel=True,
        ),
        Target(
            "onnx-cpu-int8-dynamic", "onnx-cpu", "onnx", "dynamic", _CPU,
            "ONNX dynamic int8 (weights int8, activations quantized at run time)",
            weight_type="QInt8",
        ),
        Target(
            "onnx-gpu-fp16", "onnx-gpu", "onnx", "fp16", _GPU,
            "ONNX fp16 weights and compute, fp32 I/O (TensorRT, CUDA, CPU)",
        ),
        Target(
            "onnx-gpu-fp32", "onnx-gpu", "onnx", "fp32", _GPU,
            "ONNX fp32 for GPU providers (TensorRT, CUDA, CPU)",
        ),
        # QNN HTP runs QDQ models with static shapes; uint8 activations with uint8 weights is
        # the QNN EP's default 8-bit configuration (onnxruntime.ai/docs/execution-providers/
        # QNN-ExecutionProvider.html, "Generating a quantized model"; get_qnn_qdq_config).
        Target(
            "onnx-npu-int8", "onnx-npu", "onnx", "int8", _NPU,
            "ONNX QDQ uint8/uint8, static shapes, for NPU providers (QNN, OpenVINO, CPU)",
            needs_calibration=True, static_shapes=True,
            activation_type="QUInt8", weight_type="QUInt8",
        ),
        Target(
            "ort-cpu-fp32", "ort-cpu", "ort", "fp32", _CPU,
            "ORT format fp32, for minimal ONNX Runtime builds",
        ),
        Target(
            "ort-cpu-int8", "ort-cpu", "ort", "int8", _CPU,
            "ORT format static int8 QDQ, per-channel, for minimal ONNX Runtime builds",
            needs_calibration=True, per_channel=True,
        ),
        Target("tflite-fp32", "tflite", "tflite", "fp32", ("tflite",), "TFLite fp32"),
        Target(
            "tflite-fp16", "tflite", "tflite", "fp16", ("tflite",),
            "TFLite fp16 weights (dequantized to fp32 on CPU, native on GPU delegates)",
        ),
        Target(
            "tflite-dynamic", "tflite", "tflite", "dynamic", ("tflite",),
            "TFLite dynamic-range int8 weights, float activations",
        ),
        Target(
            "tflite-int8", "tflite", "tflite", "int8", ("tflite",),
            "TFLite full-integer int8, calibrated (--io-type float|int8)",
            needs_calibration=True,
        ),
        # Ready-made models, bundled unchanged (validated and measured all the same).
        Target(
            "onnx-as-is", "onnx-as-is", "onnx", "as-is", _CPU,
            "a ready-made .onnx, bundled unchanged",
        ),
        Target(
            "tflite-as-is", "tflite-as-is", "tflite", "as-is", ("tflite",),
            "a ready-made .tflite, bundled unchanged",
        ),
    )
}  # fmt: skip


def get_target(name: str) -> Target:
    """Look a target up by name.

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown target {name!r} (known: {', '.join(TARGETS)})") from None


def family_members(target: Target) -> list[Target]:
    """Every target of ``target``'s family, in table order."""
    return [t for t in TARGETS.values() if t.family == target.family]


def sibling(target: Target, precision: str) -> Target:
    """The target of the same family with ``precision``.

    Raises:
        ConfigError: the family has no such precision.
    """
    for candidate in family_members(target):
        if candidate.precision == precision:
            return candidate
    have = ", ".join(t.precision for t in family_members(target))
    raise ConfigError(
        f"target family {target.family!r} has no {precision!r} precision (has {have})"
    )
