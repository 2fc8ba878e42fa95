"""Models for converter tests and benchmarks, made here from data scikit-learn ships.

- :func:`digits_data`: the 8x8 digits (1797 images, scikit-learn's ``load_digits``), split.
- :func:`train_digits_mlp`: a 64-64-10 MLP trained with scikit-learn (a few seconds).
- :func:`digits_onnx` / :func:`digits_keras`: the same weights as ONNX (onnx.helper) and Keras.
- :func:`conv_onnx` / :func:`conv_keras`: a >= 1 M parameter CNN on 32x32x3 inputs (digits
  upsampled and tinted), same weights in both, NHWC input in both.

Other areas may import these (e.g. the agent's and quickstart's tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Digits",
    "DigitsWeights",
    "conv_data",
    "conv_keras",
    "conv_onnx",
    "digits_data",
    "digits_keras",
    "digits_onnx",
    "invoke_convert",
    "load_sample",
    "train_digits_mlp",
]

OPSET = 17  # loads in every ONNX Runtime of devices/*.toml (rpi4's 1.16 implements 19)
IR_VERSION = 8


@dataclass(frozen=True)
class Digits:
    """Train/test split of scikit-learn's digits, pixels scaled to [0, 1] (float32)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class DigitsWeights:
    """Dense layers: ``[(W (in, out), b (out,)), ...]``, ReLU between, softmax at the end."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]


def digits_data(seed: int = 0) -> Digits:
    """Load the digits and split 70/30 (stratified, fixed seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    return Digits(x_tr, y_tr, x_te, y_te)


def train_digits_mlp(digits: Digits, hidden: int = 64, seed: int = 0) -> DigitsWeights:
    """Train a 64-hidden-10 MLP with scikit-learn (about 97 % test accuracy)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=400, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(digits.x_train, digits.y_train)
    layers = tuple(
        (w.astype(np.float32), b.astype(np.float32))
        for w, b in zip(clf.coefs_, clf.intercepts_, strict=True)
    )
    return DigitsWeights(layers)


def digits_onnx(path: Path, weights: DigitsWeights, *, batch: int | str = "N") -> Path:
    """Write the MLP as ONNX: input ``pixels`` [N, 64], output ``probs`` [N, 10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    current = "pixels"
    for i, (w, b) in enumerate(weights.layers):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes.append(
            helper.make_node("Gemm", [current, f"W{i}", f"B{i}"], [f"h{i}"], name=f"fc{i}")
        )
        current = f"h{i}"
        if i < len(weights.layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"], name=f"relu{i}"))
            current = f"r{i}"
    nodes.append(helper.make_node("Softmax", [current], ["probs"], axis=-1, name="softmax"))
    n_in = weights.layers[0][0].shape[0]
    n_out = weights.layers[-1][0].shape[1]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def digits_keras(path: Path, weights: DigitsWeights) -> Path:
    """Write the same MLP as a Keras model (``.keras`` or ``.h5`` by the path's suffix)."""
    import keras

    n_in = weights.layers[0][0].shape[0]
    inputs = keras.Input((n_in,), name="pixels")
    x = inputs
    for i, (w, b) in enumerate(weights.layers):
        last = i == len(weights.layers) - 1
        layer = keras.layers.Dense(w.shape[1], activation="softmax" if last else "relu")
        x = layer(x)
        layer.set_weights([w, b])
    model = keras.Model(inputs, x, name="digits_mlp")
    model.save(str(path))
    return path


def conv_data(
    digits: Digits, size: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits upsampled to ``size`` x ``size`` x 3 (NHWC), channels tinted differently.

    Returns:
        ``x_train, y_train, x_test, y_test``.
    """

    def up(x: np.ndarray) -> np.ndarray:
        img = x.reshape(-1, 8, 8)
        img = np.repeat(np.repeat(img, size // 8, axis=1), size // 8, axis=2)
        tint = np.array([1.0, 0.6, 0.3], dtype=np.float32)
        return (img[..., None] * tint).astype(np.float32)

    return up(digits.x_train), digits.y_train, up(digits.x_test), digits.y_test


def conv_keras(digits: Digits, path: Path, epochs: int = 4, seed: int = 0) -> Path:
    """Train a CNN (about 1.15 M parameters) on :func:`conv_data` with Keras and save it.

    conv3x3(32) - conv3x3(64) - maxpool - conv3x3(128) - maxpool - dense(128) - dense(10).
    """
    import keras

    keras.utils.set_random_seed(seed)
    x_tr, y_tr, _, _ = conv_data(digits)
    inputs = keras.Input(x_tr.shape[1:], name="image")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x_tr, y_tr, epochs=epochs, batch_size=64, verbose=0)
    model.save(str(path))
    return path


def conv_onnx(keras_path: Path, path: Path) -> Path:
    """Rebuild the trained :func:`conv_keras` model as ONNX with onnx.helper (same weights).

    Input ``image`` [N, 32, 32, 3] (NHWC like Keras; transposed to NCHW inside), output
    ``probs`` [N, 10]. Keras kernels are HWIO, ONNX Conv wants OIHW; Keras flattens NHWC, so
    the graph transposes back to NHWC before Flatten.
    """
    import keras
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = keras.models.load_model(str(keras_path), compile=False)
    nodes = [helper.make_node("Transpose", ["image"], ["t0"], perm=[0, 3, 1, 2], name="to_nchw")]
    inits = []
    current = "t0"
    for i, layer in enumerate(model.layers[1:]):
        kind = type(layer).__name__
        out = f"l{i}"
        if kind == "Conv2D":
            k, b = layer.get_weights()
            inits += [
                numpy_helper.from_array(k.transpose(3, 2, 0, 1).copy(), f"K{i}"),
                numpy_helper.from_array(b, f"C{i}"),
            ]
            nodes.append(
                helper.make_node(
                    "Conv",
                    [current, f"K{i}", f"C{i}"],
                    [f"{out}c"],
                    pads=[1, 1, 1, 1],
                    kernel_shape=[3, 3],
                    name=f"conv{i}",
                )
            )
            nodes.append(helper.make_node("Relu", [f"{out}c"], [out], name=f"relu{i}"))
        elif kind == "MaxPooling2D":
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [current],
                    [out],
                    kernel_shape=[2, 2],
                    strides=[2, 2],
                    name=f"pool{i}",
                )
            )
        elif kind == "Flatten":
            nodes.append(helper.make_node("Transpose", [current], [f"{out}t"], perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Flatten", [f"{out}t"], [out], axis=1, name="flatten"))
        elif kind == "Dense":
            w, b = layer.get_weights()
            inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
            nodes.append(
                helper.make_node("Gemm", [current, f"W{i}", f"B{i}"], [f"{out}g"], name=f"fc{i}")
            )
            act = "Softmax" if layer.get_config()["activation"] == "softmax" else "Relu"
            extra = {"axis": -1} if act == "Softmax" else {}
            nodes.append(helper.make_node(act, [f"{out}g"], [out], name=f"act{i}", **extra))
        else:
            raise ValueError(f"unexpected layer {kind}")
        current = out
    nodes.append(helper.make_node("Identity", [current], ["probs"], name="out"))
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx_model.ir_version = IR_VERSION
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))
    return path


def invoke_convert(*args: object) -> object:
    """Run ``edgeserve convert ARGS`` in-process through the root CLI (its error boundary).

    Returns:
        click's ``Result`` (``exit_code``, ``stdout``, ``stderr``).
    """
    from click.testing import CliRunner

    from edgeserve.cli import root

    return CliRunner().invoke(root, ["convert", *(str(a) for a in args)])


def load_sample(bundle_dir: Path) -> dict[str, np.ndarray]:
    """The bundle's ``sample.npz`` as a dict."""
    from edgeserve.bundle import read_bundle

    bundle = read_bundle(bundle_dir)
    path = bundle.file_path("sample")
    if path is None:
        raise AssertionError("bundle has no sample file")
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
