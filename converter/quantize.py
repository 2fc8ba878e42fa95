"""ONNX int8 quantization with ORT's quantizer: static QDQ (calibrated) and dynamic.

Both run :func:`edgeserve.converter.preprocess.prepare_for_quantization` first, keep the
nodes the user (or the mixed-precision search) excludes in float, and count what they
quantized per op type so the report can say so (ORT quantization guide:
onnxruntime.ai/docs/performance/model-optimizations/quantization.html; QNN's QDQ config:
onnxruntime.ai/docs/execution-providers/QNN-ExecutionProvider.html).
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from edgeserve.converter.calibration import Dataset, batches
from edgeserve.converter.onnx_files import EXTERNAL_DATA_THRESHOLD_BYTES, load_model, save_model
from edgeserve.converter.preprocess import (
    MIN_QDQ_OPSET,
    PassRecord,
    prepare_for_quantization,
    scratch_cwd,
)
from edgeserve.converter.qdq_compact import compact_qdq
from edgeserve.converter.quiet import quiet_third_party
from edgeserve.converter.targets import Target

from edgeserve.errors import ConfigError, ConversionError

__all__ = [
    "DYNAMIC_OP_TYPES",
    "STATIC_OP_TYPES",
    "Exclusions",
    "QuantResult",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "quantized_counts",
]

CALIBRATION_MAX_ROWS: Final = 512  # rows; MinMax/Entropy statistics settle well before this
# Dynamic quantization pays off for MatMul/Gemm-heavy models; ConvInteger is far slower than
# fp32 Conv on CPU (measured: 5.7x at batch 1 on benchmarks/convert.py's CNN), and ORT's guide
# recommends static quantization for CNNs. So Conv stays fp32 in the dynamic target.
DYNAMIC_OP_TYPES: Final = ("MatMul", "Gemm", "Attention", "LSTM", "GRU", "Gather")
# What static int8 quantizes by default: ops with int8 CPU kernels in ONNX Runtime (QLinearConv,
# MatMulInteger/QLinearMatMul, QGemm, QLinearSigmoid, QLinearConcat, pooling, ...) and data
# movement that keeps a tensor int8 between them. Element-wise arithmetic (Add, Mul, Div, Sub,
# HardSigmoid: the HardSwish chains of mobile nets) has no int8 kernel on the CPU provider, so
# quantizing it only adds Dequantize/Quantize pairs: measured on the PP-OCRv4 text detector,
# quantizing them too cost 7.8 -> 20.3 points of IoU and 1.0x -> 1.5x latency vs fp32.
STATIC_OP_TYPES: Final = (
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Relu", "Clip", "LeakyRelu", "Sigmoid",
    "MaxPool", "GlobalAveragePool", "AveragePool", "Concat", "Split", "Resize", "Reshape",
    "Transpose", "Squeeze", "Unsqueeze", "Gather", "Softmax", "Attention", "LSTM", "GRU",
)  # fmt: skip
# ops that replace a dynamically quantized node (ORT's dynamic operator classes)
_DYNAMIC_REPLACEMENTS: Final = (
    "MatMulInteger", "DynamicQuantizeMatMul", "ConvInteger", "QAttention", "DynamicQuantizeLSTM",
)  # fmt: skip


@dataclass(frozen=True)
class Exclusions:
    """What stays in float: node-name globs and op types.

    Attributes:
        node_globs: ``fnmatch`` patterns on node names (``--exclude-nodes``).
        op_types: op types never quantized (``--exclude-op-types``).
    """

    node_globs: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()

    def resolve(self, model: Any) -> tuple[str, ...]:
        """Names of the model's nodes matched by :attr:`node_globs`.

        Raises:
            ConfigError: a glob that matches no node (a typo would silently quantize it).
        """
        names = [n.name for n in model.graph.node if n.name]
        matched: list[str] = []
        for glob in self.node_globs:
            hits = [n for n in names if fnmatch.fnmatchcase(n, glob)]
            if not hits:
                raise ConfigError(f"--exclude-nodes {glob!r} matches no node of the model")
            matched += [h for h in hits if h not in matched]
        return tuple(matched)

    def op_types_to_quantize(self, candidates: tuple[str, ...]) -> list[str]:
        """The op types that may be quantized (all of ``candidates``, since ORT rewrites some
        ops into others while quantizing, e.g. a dynamic Gemm into MatMul + Add)."""
        return [op for op in candidates if op not in self.op_types]


@dataclass
class QuantResult:
    """What a quantization pass did.

    Attributes:
        passes: pre-processing passes (the manifest's ``converter.passes``).
        quantized: op type -> number of nodes quantized.
        excluded: node names kept in float.
        float_model: the pre-processed float model the quantizer read (for sensitivity).
        qdq_model: the QDQ model as the quantizer wrote it, with its tensor names (for
            sensitivity; ``dst`` holds its compacted form).
    """

    passes: list[PassRecord]
    quantized: dict[str, int]
    excluded: tuple[str, ...] = field(default_factory=tuple)
    float_model: Path | None = None
    qdq_model: Path | None = None


def quantized_counts(before: Any, after: Any) -> dict[str, int]:
    """Op type -> nodes quantized, from the float model and its quantized form.

    A QDQ node counts when it reads a DequantizeLinear output and its output goes only into
    QuantizeLinear (it runs between int8 tensors), or when it is a Conv/MatMul/Gemm with a
    dequantized input; a dynamic node counts when it was replaced (MatMul -> MatMulInteger /
    DynamicQuantizeMatMul, ...).
    """
    producer = {o: n for n in after.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in after.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    counts: Counter[str] = Counter()
    for node in after.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        dq_in = any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
                    for i in node.input)  # fmt: skip
        uses = consumers.get(node.output[0], []) if node.output else []
        q_out = bool(uses) and all(u.op_type == "QuantizeLinear" for u in uses)
        weight = node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and dq_in
        if (dq_in and q_out) or weight:
            counts[node.op_type] += 1
    if any(n.op_type in _DYNAMIC_REPLACEMENTS for n in after.graph.node):
        had = Counter(n.op_type for n in before.graph.node)
        has = Counter(n.op_type for n in after.graph.node)
        for op in DYNAMIC_OP_TYPES:
            if had[op] > has[op]:
                counts[op] += had[op] - has[op]
    return dict(sorted(counts.items()))


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a dataset."""

    def __init__(self, data: Dataset, batch: int) -> None:
        n = min(CALIBRATION_MAX_ROWS, next(iter(data.values())).shape[0])
        batch = min(batch, n)
        # equal-sized batches only: the histogram calibrators (Entropy, Percentile) stack them
        n -= n % batch
        self._batches = batches({k: v[:n] for k, v in data.items()}, batch)
        self._it = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration batch, or None when exhausted (ORT's reader protocol)."""
        return next(self._it, None)

    def rewind(self) -> None:
        """Start over (ORT rewinds between calibration passes)."""
        self._it = iter(self._batches)


def _reader(data: Dataset, batch: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        """ORT's abstract reader, implemented by :class:`_Reader`."""

    return Reader(data, batch)


def quantize_static_int8(
    src: Path,
    dst: Path,
    work: Path,
    target: Target,
    calibration: Dataset,
    method: str,
    batch: int,
    exclude: Exclusions,
) -> QuantResult:
    """Static QDQ quantization, calibrated on ``calibration``, after robust pre-processing;
    the QDQ model is then compacted (:func:`edgeserve.converter.qdq_compact.compact_qdq`).

    Args:
        src: fp32 ONNX file (dynamic dimensions kept unless the target pins them).
        dst: where the compacted QDQ model goes.
        work: scratch directory (the quantizer's own output stays there).
        target: activation/weight types, per-channel, NPU flavour.
        calibration: rows to calibrate on, at their own size.
        method: ``minmax`` | ``entropy`` | ``percentile``.
        batch: rows per calibration batch (1 when the model fixes its batch to 1).
        exclude: node-name globs and op types kept in float.

    Returns:
        The passes that ran and the nodes quantized / kept in float.

    Raises:
        ConfigError: no quantizable node is left after exclusions.
        ConversionError: quantization failed.
    """
    from onnxruntime import quantization as q

    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    src, dst, work = src.resolve(), dst.resolve(), work.resolve()  # the CWD changes below
    pre, passes = prepare_for_quantization(src, work, MIN_QDQ_OPSET)
    full = work / "qdq-full.onnx"
    model = load_model(pre)
    excluded = exclude.resolve(model)
    op_types = exclude.op_types_to_quantize(STATIC_OP_TYPES)
    act, wt = q.QuantType[target.activation_type], q.QuantType[target.weight_type]
    with quiet_third_party(), scratch_cwd(work):
        try:
            if target.static_shapes:
                from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

                config = get_qnn_qdq_config(
                    str(pre),
                    _reader(calibration, batch),
                    calibrate_method=methods[method],
                    activation_type=act,
                    weight_type=wt,
                    per_channel=target.per_channel,
                )
                config.nodes_to_exclude = list(excluded)
                if exclude.op_types:
                    config.op_types_to_quantize = op_types
                q.quantize(str(pre), str(full), config)
            else:
                q.quantize_static(
                    str(pre),
                    str(full),
                    _reader(calibration, batch),
                    quant_format=q.QuantFormat.QDQ,
                    per_channel=target.per_channel,
                    activation_type=act,
                    weight_type=wt,
                    calibrate_method=methods[method],
                    op_types_to_quantize=op_types,
                    nodes_to_exclude=list(excluded),
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                    use_external_data_format=model.ByteSize() > EXTERNAL_DATA_THRESHOLD_BYTES,
                )
        except (ConfigError, ConversionError):
            raise
        except Exception as exc:
            raise ConversionError(f"static quantization failed: {_first(exc)}") from exc
    quantized = load_model(full)
    counts = quantized_counts(model, quantized)
    stats = compact_qdq(quantized)
    save_model(quantized, dst)  # external data past the threshold, as the quantizer does
    passes.append(
        PassRecord(
            "qdq-compaction",
            "ran",
            f"{stats.zero_points} zero points dropped, {stats.renamed} names shortened, "
            f"{stats.value_info} value_info removed",
        )
    )
    return QuantResult(passes, counts, excluded, pre, full)


def quantize_dynamic_int8(src: Path, dst: Path, work: Path, exclude: Exclusions) -> QuantResult:
    """Dynamic int8: MatMul/Gemm/Attention/LSTM/GRU weights quantized offline, activations at
    run time, after the same pre-processing as static int8 (which turns ``Constant`` weights
    into the initializers the quantizer needs).

    Raises:
        ConversionError: nothing was quantized (the model has no weight the dynamic quantizer
            takes), or quantization failed.
    """
    from onnxruntime import quantization as q

    src, dst, work = src.resolve(), dst.resolve(), work.resolve()  # the CWD changes below
    pre, passes = prepare_for_quantization(src, work, MIN_QDQ_OPSET)
    model = load_model(pre)
    excluded = exclude.resolve(model)
    op_types = exclude.op_types_to_quantize(DYNAMIC_OP_TYPES)
    with quiet_third_party(), scratch_cwd(work):
        try:
            q.quantize_dynamic(
                str(pre), str(dst), weight_type=q.QuantType.QInt8, op_types_to_quantize=op_types,
                nodes_to_exclude=list(excluded),
                use_external_data_format=model.ByteSize() > EXTERNAL_DATA_THRESHOLD_BYTES,
            )  # fmt: skip
        except Exception as exc:
            raise ConversionError(f"dynamic quantization failed: {_first(exc)}") from exc
    counts = quantized_counts(model, load_model(dst))
    if not counts:
        present = sorted({n.op_type for n in model.graph.node} & set(DYNAMIC_OP_TYPES))
        raise ConversionError(
            "dynamic int8 quantized nothing: the model has no "
            + "/".join(DYNAMIC_OP_TYPES[:5])
            + " node with a constant weight"
            + (f" (found {', '.join(present)}: computed weights or excluded)" if present else "")
            + "; use a static int8 target (--calibration) or fp16"
        )
    return QuantResult(passes, counts, excluded, pre)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
