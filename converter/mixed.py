"""Mixed precision: keep the most sensitive nodes, or the output tail, in float until it fits.

Starting from a static int8 candidate the gate refused, two kinds of float set are tried:

- *sensitivity steps*: the nodes ranked by
  :func:`edgeserve.converter.sensitivity.node_sensitivity`, growing (1, 2, 4, 8, 16 of the
  ranking);
- the *output tail* (:func:`output_tail`): every node after the last one whose output still has
  the input's layout, i.e. the part of the graph that decodes feature maps into the outputs (a
  detector's box decoding, distribution-focal Softmax/Conv and class Sigmoid; a classifier's
  Flatten/Gemm). A per-node ranking does not find it: int8 error there is spread over many
  nodes, none of which alone fixes the metric. It is tried once, after the first sensitivity
  step, and only when it is a small part of the model (:data:`TAIL_MAX_SHARE` of its
  Conv/MatMul/Gemm nodes), so that the rest stays int8 and the bundle smaller than fp32.

Every float set is extended with the Concat/Reshape-like consumers that would re-quantize it
with a shared scale. Each trial is quantized and judged again, and the search stops at the first
one the gate passes, or after :data:`MAX_TRIALS` trials (the search is bounded, like Intel
Neural Compressor's ``max_trials`` and TFLite's selective quantization with a denylist). Each
trial's candidate records its float set (``float_set``: which kind, and the nodes in
``converter.options.excluded_nodes`` of its bundle).
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from edgeserve.converter.evaluate import Candidate
from edgeserve.converter.quantize import Exclusions
from edgeserve.converter.sensitivity import NodeError, with_shared_scale

__all__ = ["MAX_TRIALS", "TAIL_MAX_SHARE", "TOP_SENSITIVE", "output_tail", "search_mixed"]

MAX_TRIALS: Final = 6  # five sensitivity steps and the output tail
TOP_SENSITIVE: Final = 10  # nodes listed in the report and the manifest
TAIL_MAX_SHARE: Final = 0.25  # of the Conv/MatMul/Gemm nodes; past it the tail is not tried
# ops whose output does not keep the input's layout (axes merged, moved or contracted)
_LAYOUT_OPS: Final = (
    "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Gemm", "MatMul", "Einsum",
    "Gather", "GatherElements", "GatherND",
)  # fmt: skip
_NO_DATA_OPS: Final = ("Shape", "Size", "Constant", "ConstantOfShape")
_WEIGHTED_OPS: Final = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _ranks(model: Any) -> dict[str, int]:
    """Tensor name -> rank, where shape inference knows it."""
    out: dict[str, int] = {}
    for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        if v.type.tensor_type.HasField("shape"):
            out[v.name] = len(v.type.tensor_type.shape.dim)
    return out


def output_tail(model: Any) -> list[str]:
    """Names of the nodes after the last one whose output keeps the input's layout.

    A tensor keeps the layout when it comes from the graph inputs through nodes that are not
    layout ops (:data:`_LAYOUT_OPS`: Reshape, Transpose, MatMul, ...), whose data inputs all
    keep it and whose output rank (where known) is the input's. The tail is every node on the
    data path whose output does not: in a YOLO head, from the Reshapes that flatten the last
    feature maps to the output. Shape computations (``Shape``, ``Constant``) are not in it.
    Empty when the outputs keep the layout (a segmenter's map).
    """
    ranks = _ranks(model)
    initializers = {i.name for i in model.graph.initializer}
    data = {i.name for i in model.graph.input if i.name not in initializers}
    layout: dict[str, int | None] = {name: ranks.get(name) for name in data}  # name -> rank
    tail: list[str] = []
    for node in model.graph.node:
        ins = [i for i in node.input if i in data]
        if not ins or node.op_type in _NO_DATA_OPS:
            continue
        data.update(o for o in node.output if o)
        in_ranks = {layout[i] for i in ins if i in layout}
        keeps = node.op_type not in _LAYOUT_OPS and all(i in layout for i in ins)
        rank = next(iter(in_ranks)) if len(in_ranks) == 1 else None
        if keeps and all(ranks.get(o, rank) == rank for o in node.output if o):
            layout.update((o, rank) for o in node.output if o)
        elif node.name:
            tail.append(node.name)
    return tail


def _tail_fits(model: Any, tail: list[str]) -> bool:
    """The tail holds at most :data:`TAIL_MAX_SHARE` of the weighted nodes (and is not empty)."""
    names = set(tail)
    weighted = [n.name for n in model.graph.node if n.op_type in _WEIGHTED_OPS]
    kept = sum(1 for n in weighted if n in names)
    return bool(tail) and kept <= TAIL_MAX_SHARE * max(len(weighted), 1)


def float_sets(ranking: list[NodeError], float_model: Any) -> list[tuple[str, list[str]]]:
    """The float sets to try, in order: (label, node names), before the shared-scale consumers.

    Sensitivity steps of 1, 2, 4, ... of the ranking (up to all of it), with the output tail
    after the first step when it fits (:func:`_tail_fits`), at most :data:`MAX_TRIALS` sets.
    """
    names = [e.node for e in ranking]
    steps: list[tuple[str, list[str]]] = []
    k = 1
    while names and len(steps) < MAX_TRIALS:
        k = min(k, len(names))
        steps.append((f"sensitivity top {k}", names[:k]))
        if k == len(names):
            break
        k *= 2
    tail = output_tail(float_model)
    if _tail_fits(float_model, tail):
        steps.insert(min(1, len(steps)), (f"output tail ({len(tail)} nodes)", tail))
    return steps[:MAX_TRIALS]


def search_mixed(
    ranking: list[NodeError],
    float_model: Any,
    base: Exclusions,
    trial: Callable[[Exclusions, Path], Candidate],
    work: Path,
    max_trials: int = MAX_TRIALS,
) -> list[Candidate]:
    """Trials of the float sets of :func:`float_sets`; stops at the first the gate passes.

    Args:
        ranking: its nodes, most sensitive first.
        float_model: the pre-processed float model (``onnx.ModelProto``) the names refer to.
        base: the user's own exclusions (kept in every trial).
        trial: builds and evaluates a candidate with the given exclusions in a directory.
        work: scratch directory for the trials.
        max_trials: the bound.

    Returns:
        Every trial's candidate, in order, each with its ``float_set`` label (the last one
        passes, unless the bound was hit).
    """
    tried: list[Candidate] = []
    for i, (label, names) in enumerate(float_sets(ranking, float_model)[:max_trials]):
        # node names are literal, not patterns; a Concat that reads a float node would
        # re-quantize it with its shared scale, so it stays float with it
        nodes = [glob.escape(n) for n in with_shared_scale(float_model, names)]
        keep = tuple(dict.fromkeys((*base.node_globs, *nodes)))
        candidate = trial(replace(base, node_globs=keep), work / f"mixed{i}")
        candidate.float_set = label
        tried.append(candidate)
        if candidate.failure is None:
            break
    return tried
