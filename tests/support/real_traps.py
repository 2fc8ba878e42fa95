"""Generated ONNX models that reproduce what real exports do to a quantizer.

- :func:`paddle_like_segmenter`: weights as ``Constant`` nodes, an unfused BatchNormalization,
  opset 11, dynamic H/W, and the flatten ``Reshape(x, Concat(axis=-1)[Shape(x)[:2], [-1]])``
  PaddlePaddle emits, on which ORT's symbolic shape inference asserts (``_infer_Concat``).
- :func:`yolo_like_detector`: a YOLOv8-style head, ``[1, 4+C, A]`` with box coordinates in
  pixels and class scores from a Sigmoid joined by one Concat (after a Split of the box branch).
- :func:`ctc_like_recognizer`: Conv, then stacked MatMuls with ``Constant`` weights, then a
  Softmax over classes per time step, ``[N, T, C]``.
- :func:`fp16_overflow_model`: an output past fp16's 65504.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "ctc_like_recognizer",
    "fp16_overflow_model",
    "paddle_like_segmenter",
    "yolo_like_detector",
]


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def _save(nodes: list, inputs: list, outputs: list, path: Path, opset: int, inits=()) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def paddle_like_segmenter(path: Path, channels: int = 48, seed: int = 0) -> Path:
    """x [N, 3, H, W] -> probability map [N, 1, H, W]; opset 11, Constant weights, BN."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    c = channels
    nodes = [
        _const("w1", (rng.standard_normal((c, 3, 3, 3)) * 0.3).astype(f32)),
        _const("b1", np.zeros(c, f32)),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        _const("gamma", (1 + 0.1 * rng.standard_normal(c)).astype(f32)),
        _const("beta", (0.1 * rng.standard_normal(c)).astype(f32)),
        _const("mean", (0.1 * rng.standard_normal(c)).astype(f32)),
        _const("var", np.ones(c, f32)),
        helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        _const("w2", (rng.standard_normal((c, c, 3, 3)) * (1.0 / np.sqrt(9 * c))).astype(f32)),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"]),
        # PaddlePaddle's flatten: the shape is Concat(axis=-1) of a Shape slice and [-1]
        helper.make_node("Shape", ["r2"], ["s"]),
        _const("zero", np.array([0], np.int64)),
        _const("two", np.array([2], np.int64)),
        helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
        _const("minus1", np.array([-1], np.int64)),
        helper.make_node("Concat", ["nc", "minus1"], ["flat_shape"], axis=-1),
        helper.make_node("Reshape", ["r2", "flat_shape"], ["flat"]),
        helper.make_node("Reshape", ["flat", "s"], ["back"]),
        _const("w3", (rng.standard_normal((1, c, 1, 1)) * 0.5).astype(f32)),
        helper.make_node("Conv", ["back", "w3"], ["logit"], name="head"),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    return _save(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        path,
        opset=11,
    )


def yolo_like_detector(path: Path, classes: int = 3, size: int = 32, seed: int = 0) -> Path:
    """images [1, 3, S, S] -> [1, 4+C, A] (A = (S/4)^2 anchors), Ultralytics' layout."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    a = (size // 4) ** 2
    inits = [
        numpy_helper.from_array((rng.standard_normal((16, 3, 4, 4)) * 0.3).astype(f32), "wf"),
        numpy_helper.from_array((rng.standard_normal((4, 16, 1, 1)) * 0.5).astype(f32), "wb"),
        numpy_helper.from_array((rng.standard_normal((classes, 16, 1, 1)) * 0.8).astype(f32), "wc"),
        numpy_helper.from_array(np.array([1, 4 + classes, a], np.int64), "shape_out"),
        numpy_helper.from_array(np.array([1, 4, a], np.int64), "shape_box"),
        numpy_helper.from_array(np.array([1, classes, a], np.int64), "shape_cls"),
        numpy_helper.from_array(np.array([2, 2], np.int64), "split"),
        numpy_helper.from_array(np.array(640.0, f32), "pixels"),  # a 640 px image
        numpy_helper.from_array(np.array(160.0, f32), "box_size"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "wf"], ["feat"], strides=[4, 4], name="stem"),
        helper.make_node("Relu", ["feat"], ["featr"]),
        helper.make_node("Conv", ["featr", "wb"], ["box_raw"], name="box_conv"),
        helper.make_node("Reshape", ["box_raw", "shape_box"], ["box_flat"], name="box_reshape"),
        helper.make_node("Split", ["box_flat", "split"], ["xy", "wh"], axis=1, name="box_split"),
        helper.make_node("Sigmoid", ["xy"], ["xy_s"], name="xy_sigmoid"),
        helper.make_node("Mul", ["xy_s", "pixels"], ["xy_px"], name="xy_scale"),
        helper.make_node("Sigmoid", ["wh"], ["wh_s"], name="wh_sigmoid"),
        helper.make_node("Mul", ["wh_s", "box_size"], ["wh_px"], name="wh_scale"),
        helper.make_node("Concat", ["xy_px", "wh_px"], ["box"], axis=1, name="box_concat"),
        helper.make_node("Conv", ["featr", "wc"], ["cls_raw"], name="cls_conv"),
        helper.make_node("Reshape", ["cls_raw", "shape_cls"], ["cls_flat"], name="cls_reshape"),
        helper.make_node("Sigmoid", ["cls_flat"], ["cls"], name="cls_sigmoid"),
        helper.make_node("Concat", ["box", "cls"], ["output0"], axis=1, name="head_concat"),
    ]
    return _save(
        nodes,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, a])],
        path,
        opset=13,
        inits=inits,
    )


def ctc_like_recognizer(path: Path, classes: int = 12, hidden: int = 96, seed: int = 0) -> Path:
    """x [N, 1, 8, W] -> [N, W/4, C] softmax scores; MatMul weights are Constant nodes."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    nodes = [
        _const("wc", (rng.standard_normal((hidden, 1, 8, 4)) * 0.4).astype(f32)),
        helper.make_node("Conv", ["x", "wc"], ["c"], strides=[8, 4], name="conv"),  # [N,h,1,T]
        _const("axis2", np.array([2], np.int64)),
        helper.make_node("Squeeze", ["c", "axis2"], ["sq"], name="squeeze"),
        helper.make_node("Transpose", ["sq"], ["seq"], perm=[0, 2, 1], name="to_seq"),
    ]
    prev = "seq"
    for i in range(3):
        w = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(f32)
        nodes += [
            _const(f"w{i}", w),
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"),
            helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        prev = f"r{i}"
    wo = (rng.standard_normal((hidden, classes)) * 3 / np.sqrt(hidden)).astype(f32)
    nodes += [
        _const("wo", wo),
        helper.make_node("MatMul", [prev, "wo"], ["logits"], name="classifier"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
    ]
    return _save(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, "W"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", "T", classes])],
        path,
        opset=13,
    )


def fp16_overflow_model(path: Path) -> Path:
    """x [N, 8] -> y = (x @ W) * 1e5: values past 65504, inf in fp16."""
    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Mul", ["h", "k"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.float32(1e5), "k")]
    return _save(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        path,
        opset=17,
        inits=inits,
    )
