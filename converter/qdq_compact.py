"""Shrink a QDQ model without changing what it computes.

ORT's quantizer writes what a small model cannot afford: every weight and bias
``DequantizeLinear`` carries an all-zero zero-point tensor as large as its per-channel scale
(int32 for a bias, as large as the bias itself), each tensor and Q/DQ node is named after the
float tensor plus ``_quantized_scale``-style suffixes, and the shape annotations
(``value_info``) of every intermediate tensor stay in the graph. On the 0.59 MB PaddleOCR
direction classifier these were 0.21x of the fp32 size on top of the int8 weights
(``benchmarks/convert_real.py --models ocr-cls``). :func:`compact_qdq` removes them:

- the zero point of a ``DequantizeLinear`` that reads a Conv's weight or bias is dropped when
  it is an all-zero initializer (the ONNX default is zero of the input's type, so the result
  is the same). Only there: ONNX Runtime 1.32 still fuses such a Conv into ``QLinearConv``,
  but leaves a Gemm whose weight has no zero point in float (no ``QGemm``), which changes its
  outputs and speed. ``QuantizeLinear`` keeps its zero point, whose type picks the output
  type;
- every tensor that is not a graph input or output gets a short name, and so does every
  ``QuantizeLinear``/``DequantizeLinear`` node; the other nodes keep theirs (reports and
  ``--exclude-nodes`` use them), and so do tensors a subgraph reads;
- ``value_info`` is removed (ONNX Runtime infers shapes when it loads the model).

Per-node error analysis matches tensors by their quantizer names, so it reads the model as the
quantizer wrote it, not the compacted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

__all__ = ["CompactStats", "compact_qdq"]

_QDQ_OPS: Final = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class CompactStats:
    """What :func:`compact_qdq` removed.

    Attributes:
        zero_points: all-zero DequantizeLinear zero points dropped.
        renamed: tensors and Q/DQ nodes given short names.
        value_info: shape annotations removed.
    """

    zero_points: int
    renamed: int
    value_info: int


def compact_qdq(model: Any) -> CompactStats:
    """Compact ``model`` (an ``onnx.ModelProto`` with its tensors loaded) in place.

    Returns:
        What was removed or renamed.
    """
    graph = model.graph
    zero_points = _drop_zero_points(graph)
    renamed = _short_names(graph)
    value_info = len(graph.value_info)
    del graph.value_info[:]
    return CompactStats(zero_points, renamed, value_info)


def _drop_zero_points(graph: Any) -> int:
    """Drop all-zero initializer zero points of the DequantizeLinear nodes that read an
    initializer and feed only Conv nodes (weights, biases), then the initializers nothing
    reads any more."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    zero: dict[str, bool] = {}
    dropped = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) != 3:
            continue
        x, zp = node.input[0], node.input[2]
        if x not in inits or zp not in inits or readers.get(node.output[0]) != {"Conv"}:
            continue
        if zp not in zero:
            zero[zp] = not np.any(numpy_helper.to_array(inits[zp]))
        if zero[zp]:
            del node.input[2]
            dropped += 1
    if dropped:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        keep = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return dropped


def _subgraph_reads(graph: Any) -> set[str]:
    """Names the nodes of any subgraph (If/Loop/Scan bodies) read, at any depth."""
    out: set[str] = set()
    for node in graph.node:
        for body in _bodies(node):
            out |= {i for n in body.node for i in n.input}
            out |= _subgraph_reads(body)
    return out


def _bodies(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def _short_names(graph: Any) -> int:
    """Give short names to the tensors that are not graph inputs/outputs (nor read by a
    subgraph) and to the Q/DQ nodes; returns how many names changed."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    keep |= _subgraph_reads(graph)
    if any(True for n in graph.node for _ in _bodies(n)):
        # a body's own tensors share the namespace: leave every name it defines alone too
        keep |= {o for n in graph.node for b in _bodies(n) for m in b.node for o in m.output}
    existing = keep | {t.name for t in graph.initializer}
    existing |= {o for n in graph.node for o in n.output} | {n.name for n in graph.node}
    fresh = _fresh(existing)
    table: dict[str, str] = {}
    for name in [t.name for t in graph.initializer] + [o for n in graph.node for o in n.output]:
        if name and name not in keep and name not in table:
            table[name] = next(fresh)
    for tensor in graph.initializer:
        tensor.name = table.get(tensor.name, tensor.name)
    renamed = len(table)
    for node in graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = table.get(name, name)
        for k, name in enumerate(node.output):
            node.output[k] = table.get(name, name)
        if node.op_type in _QDQ_OPS and node.domain in ("", "ai.onnx"):
            node.name = next(fresh)
            renamed += 1
    return renamed


def _fresh(taken: set[str]) -> Iterator[str]:
    """Short names (base 36) that are not in ``taken``."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    i = 0
    while True:
        n, s = i, ""
        while True:
            n, r = divmod(n, 36)
            s = digits[r] + s
            if n == 0:
                break
        i += 1
        if s not in taken:
            yield s
