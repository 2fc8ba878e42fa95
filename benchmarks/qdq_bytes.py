"""Where the bytes of a static int8 (QDQ) model go, before and after the converter's compaction.

Quantizes one of ``convert_real.py``'s models with the converter's static int8 route
(``onnx-cpu-int8``, 6 calibration rows) and prints, for the fp32 original, the quantizer's own
output and the compacted model the bundle gets: the file size and the bytes of each part
(int8/uint8 weights, int32 biases, per-channel scales, zero points, activation scale/zero-point
scalars, float tensors left unquantized, nodes by kind, names, ``value_info``).

Run: ``.venv/bin/python benchmarks/qdq_bytes.py [--model ocr-cls]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnx
from edgeserve.converter.quantize import Exclusions, quantize_static_int8
from edgeserve.converter.targets import get_target
from onnx import TensorProto
from real_models import MODELS, fetch

_INT = (TensorProto.INT8, TensorProto.UINT8)


def _role(tensor: Any, slot: tuple[str, int] | None) -> str:
    """What an initializer is, from its type, rank and where a node reads it."""
    op, index = slot or ("", -1)
    if op == "DequantizeLinear" or op == "QuantizeLinear":
        if not tensor.dims:
            return "activation scale/zero-point scalars"
        if index == 2:
            return "weight/bias zero points"
        if index == 1:
            return "per-channel scales"
        if tensor.data_type == TensorProto.INT32:
            return "int32 biases"
        if tensor.data_type in _INT:
            return "int8 weights"
    if tensor.data_type == TensorProto.FLOAT:
        return "float tensors (not quantized)"
    return "other initializers"


def breakdown(path: Path) -> Counter[str]:
    """Bytes per part of the model at ``path`` (names counted apart from what they name)."""
    model = onnx.load(str(path))
    graph = model.graph
    slot: dict[str, tuple[str, int]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            slot.setdefault(name, (node.op_type, k))
    parts: Counter[str] = Counter()
    parts["file"] = path.stat().st_size
    names = 0
    for tensor in graph.initializer:
        names += len(tensor.name)
        parts[_role(tensor, slot.get(tensor.name))] += tensor.ByteSize() - len(tensor.name)
    for node in graph.node:
        strings = len(node.name) + sum(map(len, node.input)) + sum(map(len, node.output))
        names += strings
        kind = node.op_type if node.op_type in ("QuantizeLinear", "DequantizeLinear") else "other"
        if node.op_type == "Constant":
            kind = "Constant"
        parts[f"{kind} nodes (without names)"] += node.ByteSize() - strings
    parts["names (tensors, initializers, nodes)"] = names
    parts["value_info"] = sum(v.ByteSize() for v in graph.value_info)
    return parts


def main() -> None:
    """Quantize, then print the three breakdowns side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ocr-cls", choices=sorted(MODELS))
    args = parser.parse_args()
    spec = MODELS[args.model]
    src = fetch(spec)
    inputs = spec.make(6, 0)[0]
    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = work / "model.onnx"
        (work / "work").mkdir()
        result = quantize_static_int8(
            src, out, work / "work", get_target("onnx-cpu-int8"), {name: inputs}, "minmax",
            1, Exclusions(),
        )  # fmt: skip
        assert result.qdq_model is not None
        columns = {"fp32": breakdown(src), "ORT QDQ": breakdown(result.qdq_model),
                   "compacted": breakdown(out)}  # fmt: skip
    keys = ["file", *sorted({k for c in columns.values() for k in c} - {"file"})]
    fp32 = columns["fp32"]["file"]
    print(f"# {args.model}: {src.name}; bytes (and x of the fp32 file)")
    print(f"{'part':40s}" + "".join(f"{c:>20s}" for c in columns))
    for key in keys:
        cells = "".join(f"{col[key]:>11d} ({col[key] / fp32:4.2f}x)" for col in columns.values())
        print(f"{key:40s}{cells}")


if __name__ == "__main__":
    main()
