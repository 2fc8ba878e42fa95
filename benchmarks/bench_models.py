"""The models the agent benchmarks serve, made here with onnx: a small CNN (MNIST-shaped) and
an MLP whose batch 1 is a matrix-vector product; :func:`build_bundle` wraps either in a bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_cnn(path: Path) -> tuple[tuple[int, ...], int]:
    """A small CNN: conv8-relu-pool-conv16-relu-pool-fc10-softmax on 1x28x28."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    inits = [
        w("c1w", 8, 1, 3, 3),
        w("c1b", 8),
        w("c2w", 16, 8, 3, 3),
        w("c2b", 16),
        w("fw", 16 * 7 * 7, 10),
        w("fb", 10),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return (-1, 1, 28, 28), 10


def make_mlp(path: Path) -> tuple[tuple[int, ...], int]:
    """An MLP 256-1024-1024-10: batch 1 is a matrix-vector product, batching pays."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [256, 1024, 1024, 10]
    nodes, inits, prev = [], [], "x"
    for i in range(3):
        inits.append(
            numpy_helper.from_array(
                (rng.standard_normal((dims[i], dims[i + 1])) * 0.03).astype(np.float32), f"w{i}"
            )
        )
        inits.append(numpy_helper.from_array(np.zeros(dims[i + 1], np.float32), f"b{i}"))
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
        prev = f"g{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["y"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return (-1, 256), 10


def build_bundle(work: Path, kind: str) -> Path:
    from edgeserve.bundle import write_bundle
    from edgeserve.bundle.manifest import Manifest, TensorSpec

    onnx_path = work / f"{kind}.onnx"
    shape, classes = (make_cnn if kind == "cnn" else make_mlp)(onnx_path)
    manifest = Manifest(
        name=kind,
        version=1,
        format="onnx",
        precision="fp32",
        target="onnx-cpu-fp32",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("x", "FP32", shape),),
        outputs=(TensorSpec("y", "FP32", (-1, classes)),),
    )
    return write_bundle(
        work / f"{kind}-bundle", manifest, {"model.onnx": (onnx_path, "model")}
    ).path
