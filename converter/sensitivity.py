"""Which nodes int8 hurts most: per-node error between the float and the QDQ model.

Uses ONNX Runtime's QDQ debugging tools (``onnxruntime.quantization.qdq_loss_debug``): both
models are augmented to output every intermediate tensor, run on a few validation rows, and
each node output of the quantized model is compared with the same tensor of the float model
(signal-to-quantization-noise ratio of the worst channel, dB), and nodes are ranked by it,
lowest first, with the SQNR each loses against its worst input as the tie-break. The worst
channel matters: in a detector head, class scores that share one Concat scale with pixel
coordinates are wiped out while the whole tensor's SQNR still looks fine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from edgeserve.converter.calibration import Dataset
from edgeserve.converter.onnx_files import load_model
from edgeserve.converter.preprocess import scratch_cwd
from edgeserve.converter.quiet import quiet_third_party

__all__ = ["SENSITIVITY_ROWS", "NodeError", "node_sensitivity", "with_shared_scale"]

SENSITIVITY_ROWS: Final = 2  # rows; every intermediate tensor of both models is kept in memory
LARGE_ROW_VALUES: Final = 1_000_000  # input values per row past which one row is used
_SKIP_OPS: Final = ("QuantizeLinear", "DequantizeLinear", "Constant", "Shape")
# ops whose QDQ form shares its input's scale (ORT's QDQ quantizer: data movement and Concat);
# keeping a node in float leaves its output quantized anyway when one of these consumes it
_SHARED_SCALE_OPS: Final = (
    "Concat", "Split", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Resize",
    "MaxPool", "Gather", "Slice",
)  # fmt: skip


@dataclass(frozen=True)
class NodeError:
    """One node's figures.

    Attributes:
        node: node name in the float model.
        op_type: its op type.
        sqnr_db: worst-channel SQNR of its output, float vs quantized model (lower = worse).
        added_db: SQNR lost against its worst input (its own contribution).
    """

    node: str
    op_type: str
    sqnr_db: float
    added_db: float

    def to_dict(self) -> dict[str, Any]:
        """The manifest form (rounded)."""
        return {
            "node": self.node,
            "op_type": self.op_type,
            "sqnr_db": round(self.sqnr_db, 2),
            "added_db": round(self.added_db, 2),
        }


class _Rows:
    def __init__(self, rows: list[Mapping[str, np.ndarray]]) -> None:
        self._rows = rows
        self._it = iter(rows)

    def get_next(self) -> Mapping[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._rows)


def _reader(data: Dataset) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Rows, CalibrationDataReader):
        """ORT's reader protocol over a few rows."""

    first = next(iter(data.values()))
    per_row = int(np.prod(first.shape[1:]))
    n = min(1 if per_row > LARGE_ROW_VALUES else SENSITIVITY_ROWS, first.shape[0])
    return Reader([{k: v[i : i + 1] for k, v in data.items()} for i in range(n)])


def _db(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise > 0, 10.0 * np.log10(signal / noise), np.inf)


def _sqnr(x: list[np.ndarray], y: list[np.ndarray], channels: int) -> float:
    """Worst per-channel SQNR, so that one channel a shared scale wipes out (class scores
    concatenated with pixel coordinates) is not hidden by the others' energy.

    ORT's augmented models return each tensor flattened, one row per run; a row of batch 1
    flattens channel-major, so ``channels`` (axis 1 of the tensor, 1 if unknown) splits it.
    """
    rows_a = [np.asarray(t, np.float64).ravel() for t in x]
    rows_b = [np.asarray(t, np.float64).ravel() for t in y]
    if [r.size for r in rows_a] != [r.size for r in rows_b]:
        return float("nan")
    if any(r.size % channels for r in rows_a):
        channels = 1
    a = np.concatenate([r.reshape(channels, -1) for r in rows_a], axis=1)
    b = np.concatenate([r.reshape(channels, -1) for r in rows_b], axis=1)
    if not np.all(np.isfinite(b)):
        return float("-inf")
    signal = np.sum(a**2, axis=1)
    noise = np.sum((a - b) ** 2, axis=1)
    live = signal > 1e-6 * max(float(signal.max()), 1e-30)  # channels that carry a signal
    if not live.any():
        return float("inf")
    return float(np.min(_db(signal[live], noise[live])))


def _channels(model: Any) -> dict[str, int]:
    """Tensor name -> size of axis 1 where shape inference knows it (rank >= 2)."""
    out: dict[str, int] = {}
    for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        dims = v.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].HasField("dim_value") and dims[1].dim_value > 0:
            out[v.name] = int(dims[1].dim_value)
    return out


def node_sensitivity(
    float_model: Path, qdq_model: Path, data: Dataset, work: Path
) -> list[NodeError]:
    """Rank the float model's nodes by their int8 error (most sensitive first).

    Args:
        float_model: the pre-processed float model the quantizer read (same tensor names).
        qdq_model: the QDQ model.
        data: validation rows (the first :data:`SENSITIVITY_ROWS` are used).
        work: scratch directory for the augmented models.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    work = work.resolve()  # the CWD changes below
    float_model, qdq_model = float_model.resolve(), qdq_model.resolve()
    work.mkdir(parents=True, exist_ok=True)
    with quiet_third_party(), scratch_cwd(work):
        modify_model_output_intermediate_tensors(str(float_model), str(work / "float-aug.onnx"))
        modify_model_output_intermediate_tensors(str(qdq_model), str(work / "qdq-aug.onnx"))
        float_acts = collect_activations(str(work / "float-aug.onnx"), _reader(data))
        qdq_acts = collect_activations(str(work / "qdq-aug.onnx"), _reader(data))
        matched = create_activation_matching(qdq_acts, float_acts)
    model = load_model(float_model)
    channels = _channels(model)
    sqnr: dict[str, float] = {}
    # graph outputs keep their name on the DequantizeLinear output, which the matching (by
    # QuantizeLinear/DequantizeLinear suffixes) misses: compare those by name
    for tensor in set(float_acts) & set(qdq_acts):
        value = _sqnr(list(float_acts[tensor]), list(qdq_acts[tensor]), channels.get(tensor, 1))
        if not np.isnan(value):
            sqnr[tensor] = value
    for tensor, match in matched.items():
        if "float" in match and "post_qdq" in match:
            value = _sqnr(list(match["float"]), list(match["post_qdq"]), channels.get(tensor, 1))
            if not np.isnan(value):
                sqnr[tensor] = value
    ranked: list[NodeError] = []
    for node in model.graph.node:
        if node.op_type in _SKIP_OPS or not node.name:
            continue
        outs = [sqnr[o] for o in node.output if o in sqnr]
        if not outs:
            continue
        own = min(outs)
        ins = [sqnr[i] for i in node.input if i in sqnr]
        worst_in = min(ins) if ins else float("inf")
        added = (worst_in - own) if np.isfinite(worst_in) else (60.0 - own)
        ranked.append(NodeError(node.name, node.op_type, own, float(added)))
    ranked.sort(key=lambda e: (e.sqnr_db, -e.added_db))
    return ranked


def with_shared_scale(model: Any, names: list[str]) -> list[str]:
    """``names`` plus, transitively, the consumers that would re-quantize their output with a
    shared scale (Concat, Reshape, ... in :data:`_SHARED_SCALE_OPS`), in order."""
    by_name = {n.name: n for n in model.graph.node if n.name}
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    out = list(dict.fromkeys(names))
    todo = list(out)
    while todo:
        node = by_name.get(todo.pop())
        if node is None:
            continue
        for o in node.output:
            for r in readers.get(o, []):
                if r.op_type in _SHARED_SCALE_OPS and r.name and r.name not in out:
                    out.append(r.name)
                    todo.append(r.name)
    return out
