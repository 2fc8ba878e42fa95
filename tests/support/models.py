"""Small real models written on disk by the tests (never fetched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeserve.bundle import Bundle, write_bundle
from edgeserve.bundle.manifest import Manifest, TensorSpec


def make_onnx_linear(
    path: Path, in_features: int = 4, out_features: int = 3, seed: int = 0
) -> Path:
    """Write a tiny ONNX model y = softmax(x @ W + b) with a dynamic batch dimension."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((in_features, out_features)).astype(np.float32)
    b = rng.standard_normal(out_features).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_features])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_linear_bundle(
    directory: Path,
    *,
    name: str = "linear",
    version: int = 1,
    seed: int = 0,
    validation: dict[str, object] | None = None,
    extra_files: dict[str, tuple[Path | bytes, str]] | None = None,
) -> Bundle:
    """A ready ONNX bundle around :func:`make_onnx_linear` (input x [-1,4] FP32, output y).

    ``validation`` goes into the manifest; ``extra_files`` (path -> (source, role)) are added
    beside ``model.onnx``, e.g. a ``sample.npz``.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    model = make_onnx_linear(directory.parent / f".{name}-{version}-{seed}.onnx", seed=seed)
    manifest = Manifest(
        name=name,
        version=version,
        format="onnx",
        precision="fp32",
        target="onnx-cpu-fp32",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("y", "FP32", (-1, 3)),),
        validation=validation or {},
    )
    files: dict[str, tuple[Path | bytes, str]] = {"model.onnx": (model, "model")}
    files.update(extra_files or {})
    return write_bundle(directory, manifest, files)


def make_mixed_bundle(directory: Path, name: str = "mixed", version: int = 1) -> Bundle:
    """An ONNX model over INT8, INT64 and string (BYTES) tensors with a batch dimension:
    ``a_out = a`` (INT8 [-1, 2]), ``b_out = 2 * b`` (INT64 [-1, 2]), ``s_out = s`` (BYTES [-1, 1]).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["a"], ["a_out"]),
            helper.make_node("Mul", ["b", "two"], ["b_out"]),
            helper.make_node("Identity", ["s"], ["s_out"]),
        ],
        name,
        [
            helper.make_tensor_value_info("a", TensorProto.INT8, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 2]),
            helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 1]),
        ],
        [
            helper.make_tensor_value_info("a_out", TensorProto.INT8, ["N", 2]),
            helper.make_tensor_value_info("b_out", TensorProto.INT64, ["N", 2]),
            helper.make_tensor_value_info("s_out", TensorProto.STRING, ["N", 1]),
        ],
        [numpy_helper.from_array(np.array(2, dtype=np.int64), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    directory.parent.mkdir(parents=True, exist_ok=True)
    path = directory.parent / f".{name}-{version}.onnx"
    onnx.save(model, str(path))
    manifest = Manifest(
        name=name,
        version=version,
        format="onnx",
        precision="fp32",
        target="onnx-cpu-fp32",
        providers=("CPUExecutionProvider",),
        inputs=(
            TensorSpec("a", "INT8", (-1, 2)),
            TensorSpec("b", "INT64", (-1, 2)),
            TensorSpec("s", "BYTES", (-1, 1)),
        ),
        outputs=(
            TensorSpec("a_out", "INT8", (-1, 2)),
            TensorSpec("b_out", "INT64", (-1, 2)),
            TensorSpec("s_out", "BYTES", (-1, 1)),
        ),
    )
    return write_bundle(directory, manifest, {"model.onnx": (path, "model")})
