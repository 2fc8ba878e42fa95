"""Static int8 size on a small mobile-style CNN: the per-channel parameters, names and shape
annotations ORT's quantizer adds weigh as much as the int8 weights there, and the converter's
QDQ compaction removes what the model does not need, computing the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from edgeserve.converter.qdq_compact import compact_qdq
from support.converter import invoke_convert

from edgeserve.bundle import check_bundle

# (out channels, group) per 3x3 depthwise / 1x1 pointwise pair, like PaddleOCR's classifier
_BLOCKS = ((32, 32), (64, 1), (64, 64), (96, 1), (96, 96), (128, 1), (128, 128), (128, 1))


def _mobile_cnn(path: Path, opset: int = 11) -> Path:
    """A MobileNet-like classifier with Paddle-style tensor names (``conv2d_3.tmp_1``), every
    Conv with a bias, Relu between them, and its weights as ``Constant`` nodes (opset 11 as
    PaddleOCR's exports; per-channel QDQ needs 13, which the converter raises it to)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, prev, cin = [], "x", 3

    def const(name: str, value: np.ndarray) -> str:
        nodes.append(
            helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))
        )
        return name

    def conv(i: int, cout: int, group: int, k: int) -> None:
        nonlocal prev, cin
        w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
        w *= np.sqrt(2.0 / (cin // group * k * k))
        b = rng.standard_normal(cout).astype(np.float32) * 0.1
        wn, bn = const(f"conv2d_{i}.w_0", w), const(f"conv2d_{i}.b_0", b)
        out = f"conv2d_{i}.tmp_1"
        attrs = {"group": group, "kernel_shape": [k, k], "pads": [k // 2] * 4}
        nodes.append(helper.make_node("Conv", [prev, wn, bn], [out], **attrs))
        nodes.append(helper.make_node("Relu", [out], [f"relu_{i}.tmp_0"]))
        prev, cin = f"relu_{i}.tmp_0", cout

    conv(0, 32, 1, 3)
    for i, (cout, group) in enumerate(_BLOCKS, start=1):
        conv(i, cout, group, 3 if group > 1 else 1)
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["pool_0.tmp_0"]))
    nodes.append(helper.make_node("Flatten", ["pool_0.tmp_0"], ["flatten_0.tmp_0"]))
    fc = rng.standard_normal((cin, 2)).astype(np.float32) * 0.3
    fc_w, fc_b = const("fc_0.w_0", fc), const("fc_0.b_0", np.zeros(2, np.float32))
    nodes.append(helper.make_node("Gemm", ["flatten_0.tmp_0", fc_w, fc_b], ["fc_0.tmp_1"]))
    nodes.append(helper.make_node("Softmax", ["fc_0.tmp_1"], ["softmax_0.tmp_0"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mobile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 24, 48])],
        [helper.make_tensor_value_info("softmax_0.tmp_0", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_small_cnn_int8_is_at_most_035x_fp32(tmp_path: Path) -> None:
    import onnx

    src = _mobile_cnn(tmp_path / "mobile.onnx")
    x = np.random.default_rng(1).uniform(0, 1, (24, 3, 24, 48)).astype(np.float32)
    np.save(tmp_path / "cal.npy", x[:12])
    np.save(tmp_path / "val.npy", x[12:])
    out = tmp_path / "int8"
    result = invoke_convert(
        src, "-t", "onnx-cpu-int8", "--calibration", tmp_path / "cal.npy",
        "--validation", tmp_path / "val.npy", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    assert manifest.validation["cosine"] > 0.99
    assert (out / "model.onnx").stat().st_size <= 0.35 * src.stat().st_size
    passes = {p["pass"]: p for p in manifest.converter["passes"]}
    assert passes["qdq-compaction"]["status"] == "ran"

    model = onnx.load(str(out / "model.onnx"))
    assert not model.graph.value_info
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["softmax_0.tmp_0"]
    inits = {t.name: t for t in model.graph.initializer}
    conv_inputs = {i for n in model.graph.node if n.op_type == "Conv" for i in n.input}
    weight_dq = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.output[0] in conv_inputs
    ]
    assert len(weight_dq) == 2 * (len(_BLOCKS) + 1)  # every Conv's weight and bias
    # symmetric int8 Conv weights and int32 biases need no zero-point tensor; scales stay
    # per-channel (one per output channel)
    assert all(len(n.input) == 2 for n in weight_dq)
    assert any(len(inits[n.input[1]].dims) == 1 for n in weight_dq)
    # the compute nodes keep their names (reports and --exclude-nodes name them)
    names = {n.name for n in model.graph.node if n.op_type == "Conv"}
    assert all(n.startswith("Conv") for n in names) and len(names) == len(_BLOCKS) + 1


def test_compaction_keeps_the_outputs_and_shrinks_the_quantizer_output(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    src = _mobile_cnn(tmp_path / "mobile.onnx", opset=13)
    rows = np.random.default_rng(2).uniform(0, 1, (8, 3, 24, 48)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": rows[i : i + 1]} for i in range(len(rows))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    pre, full, small = tmp_path / "pre.onnx", tmp_path / "full.onnx", tmp_path / "small.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre), str(full), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    model = onnx.load(str(full))
    stats = compact_qdq(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(small))
    assert stats.zero_points > 0 and stats.renamed > 0
    assert small.stat().st_size < 0.85 * full.stat().st_size

    def run(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": rows})[0]  # type: ignore[no-any-return]

    np.testing.assert_array_equal(run(full), run(small))
