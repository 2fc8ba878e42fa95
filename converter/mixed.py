"""Mixed precision: keep the most sensitive nodes in float until the task metric fits.

Starting from a static int8 candidate the gate refused, the nodes ranked by
:func:`edgeserve.converter.sensitivity.node_sensitivity` are added to the float set in growing
steps (1, 2, 4, 8, ... of the ranking, each with the Concat/Reshape-like consumers that would
re-quantize it with a shared scale), each step quantized and judged again, until one passes
or :data:`MAX_TRIALS` trials have run (the search is bounded, like Intel Neural Compressor's
``max_trials`` and TFLite's selective quantization with a denylist).
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

__all__ = ["MAX_TRIALS", "TOP_SENSITIVE", "search_mixed"]

MAX_TRIALS: Final = 5
TOP_SENSITIVE: Final = 10  # nodes listed in the report and the manifest


def search_mixed(
    ranking: list[NodeError],
    float_model: Any,
    base: Exclusions,
    trial: Callable[[Exclusions, Path], Candidate],
    work: Path,
    max_trials: int = MAX_TRIALS,
) -> list[Candidate]:
    """Trials of growing float sets; stops at the first candidate the gate passes.

    Args:
        ranking: its nodes, most sensitive first.
        float_model: the pre-processed float model (``onnx.ModelProto``) the names refer to.
        base: the user's own exclusions (kept in every trial).
        trial: builds and evaluates a candidate with the given exclusions in a directory.
        work: scratch directory for the trials.
        max_trials: the bound.

    Returns:
        Every trial's candidate, in order (the last one passes, unless the bound was hit).
    """
    tried: list[Candidate] = []
    names = [e.node for e in ranking]
    k = 1
    for i in range(max_trials):
        if k > len(names):
            k = len(names)
        # node names are literal, not patterns; a Concat that reads a float node would
        # re-quantize it with its shared scale, so it stays float with it
        nodes = [glob.escape(n) for n in with_shared_scale(float_model, names[:k])]
        keep = tuple(dict.fromkeys((*base.node_globs, *nodes)))
        candidate = trial(replace(base, node_globs=keep), work / f"mixed{i}")
        tried.append(candidate)
        if candidate.failure is None or k == len(names):
            break
        k *= 2
    return tried
