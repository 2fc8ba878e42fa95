"""Triton's classification extension: a requested output's top-k classes as BYTES.

A requested output with ``parameters: {"classification": k}`` (REST) or an ``int64_param``
``classification`` (gRPC) is answered with the k largest entries of that output, each encoded
as ``"<score>:<index>"`` or, when the output has labels, ``"<score>:<index>:<label>"``, highest
score first (https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_classification.md).
For a model with a batch dimension every row is classified on its own ([B, C] -> [B, k]);
otherwise the whole tensor is one classification ([C] -> [k]). Scores are printed like C++'s
``std::to_string``, as Triton prints them (six decimals for floats).

Labels come from the bundle's ``labels`` file (:func:`edgeserve.bundle.read_labels`; written by
``edgeserve convert --class-labels``) and belong to the model's first output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeserve.errors import InferenceInputError

__all__ = ["classification_k", "classify"]


def classification_k(value: Any, output: str) -> int:
    """Check a requested ``classification`` parameter and return k.

    Raises:
        InferenceInputError: not a positive integer.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InferenceInputError(
            f"output {output}: classification must be a positive integer (the k of top-k)"
        )
    return value


def classify(
    array: np.ndarray, k: int, labels: Sequence[str] | None, batched: bool, output: str
) -> np.ndarray:
    """The top-``k`` entries of ``array`` as a BYTES (object) array of ``score:index[:label]``.

    Args:
        array: the output tensor.
        k: entries to keep per classification (fewer when there are fewer classes).
        labels: class labels by index, or None.
        batched: axis 0 is the batch axis (each row classified on its own).
        output: the output's name, for error messages.

    Raises:
        InferenceInputError: the output is not numeric.
    """
    if array.dtype.kind not in "biuf":
        raise InferenceInputError(f"output {output}: classification needs a numeric output")
    per_row = batched and array.ndim >= 2
    rows = array.reshape(array.shape[0], -1) if per_row else array.reshape(1, -1)
    take = min(k, rows.shape[1])
    # stable sort of the negated scores: equal scores keep the lower index first
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :take]
    float_scores = array.dtype.kind == "f"
    out = np.empty(order.shape, dtype=object)
    for r in range(order.shape[0]):
        for c, index in enumerate(order[r]):
            score = rows[r, index]
            text = f"{float(score):f}" if float_scores else str(int(score))
            text += f":{int(index)}"
            if labels is not None and index < len(labels):
                text += f":{labels[index]}"
            out[r, c] = text.encode()
    return out if per_row else out.reshape(take)
