"""A small real model for the quickstart: an MLP trained on scikit-learn's digits, as ONNX.

scikit-learn ships the 8x8 digits data (1,797 images), so nothing is downloaded. The trained
weights are written as a plain ONNX graph with ``onnx.helper`` (``Mul`` by 1/16 to scale the raw
0-16 pixel values, ``Gemm``-``Relu``-``Gemm``-``Softmax``), opset 17 / IR 8 so that the ONNX
Runtime builds in every device profile load it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DigitsData", "load_digits_data", "train_digits_onnx"]

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
_OPSET = 17
_IR_VERSION = 8


@dataclass(frozen=True)
class DigitsData:
    """Train/test split of the digits data: float32 pixels 0-16, int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_data(seed: int = 0) -> DigitsData:
    """The digits data split 75/25 with a fixed seed (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.25, random_state=seed, stratify=y
    )
    return DigitsData(x_train, y_train, x_test, y_test)


def train_digits_onnx(data: DigitsData, out: Path, *, hidden: int, seed: int) -> float:
    """Train an MLP with one hidden layer of ``hidden`` units and write it to ``out`` as ONNX.

    Args:
        data: the split from :func:`load_digits_data`.
        out: the ``.onnx`` file to write.
        hidden: hidden-layer width.
        seed: the MLP's random state (a different seed makes a different version).

    Returns:
        Test accuracy of the trained model, in [0, 1].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=120, random_state=seed)
    # one BLAS thread: these matrices are tiny, and on a busy 2-core machine a thread per core
    # made training 10x slower (measured: 9.6 s vs 0.9 s for the 64-unit model)
    with threadpool_limits(1), warnings.catch_warnings():
        # a short training on purpose (seconds, not minutes); accuracy is reported instead
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(data.x_train / 16.0, data.y_train)
    accuracy = float(clf.score(data.x_test / 16.0, data.y_test))
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_

    def init(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)

    graph = helper.make_graph(
        nodes=[
            helper.make_node("Mul", [INPUT_NAME, "scale"], ["scaled"]),
            helper.make_node("Gemm", ["scaled", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["h_relu"]),
            helper.make_node("Gemm", ["h_relu", "w2", "b2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1),
        ],
        name="digits_mlp",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 64])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            init("scale", np.array(1.0 / 16.0)),
            init("w1", w1),
            init("b1", b1),
            init("w2", w2),
            init("b2", b2),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="edgeserve-quickstart"
    )
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return accuracy
