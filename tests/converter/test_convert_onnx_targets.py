"""Every ONNX/ORT target on the digits classifier: bundles load and run in the agent's runtime,
accuracy stays within the issue's budgets, and the manifest is read from the converted model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgeserve.agent.serving.health import check_references
from edgeserve.converter.targets import TARGETS
from support.converter import invoke_convert, load_sample

from edgeserve.bundle import check_bundle
from edgeserve.bundle.sample import REFERENCE_TOLERANCE, reference_outputs
from edgeserve.runtimes import load_runtime

ONNX_TARGETS = [n for n, t in TARGETS.items() if not t.is_tflite and t.precision != "as-is"]
# Accuracy budgets (points); targets not named here must still stay within 1.
BUDGET = {"onnx-cpu-int8": 1.0, "onnx-gpu-fp16": 0.2}


@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_onnx_target_bundle_runs_and_keeps_accuracy(digits, tmp_path: Path, target: str) -> None:
    out = tmp_path / "bundle"
    result = invoke_convert(
        digits.onnx, "--target", target, "--calibration", digits.calibration,
        "--validation", digits.validation, "--labels", digits.labels, "--output", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "accuracy" in result.stdout and "latency p50" in result.stdout

    bundle = check_bundle(out)
    manifest = bundle.manifest
    preset = TARGETS[target]
    assert manifest.target == target
    assert manifest.format == preset.format
    assert manifest.precision == preset.precision
    assert manifest.providers == preset.providers
    assert manifest.source["format"] == "onnx"
    assert manifest.source["filename"] == "digits.onnx"
    assert manifest.converter["options"]["target"] == target
    assert [i.name for i in manifest.inputs] == ["pixels"]
    assert manifest.outputs[0].name == "probs"
    # NPU targets pin every dimension; the others keep the dynamic batch
    assert manifest.inputs[0].shape == ((1, 64) if preset.static_shapes else (-1, 64))

    v = manifest.validation
    drop = (v["accuracy_original"] - v["accuracy_converted"]) * 100
    assert v["accuracy_original"] > 0.93
    assert drop <= BUDGET.get(target, 1.0)
    assert v["original"]["latency_ms"]["p50_ms"] > 0 and v["converted"]["latency_ms"]["p95_ms"] > 0
    assert v["cosine"] > 0.99 and v["top1_agreement"] > 0.97

    # the agent's runtime loads it and the sample rows run; the converted model's own outputs
    # on them are stored for the device's post-activation health check, and pass it
    runtime = load_runtime(bundle)
    try:
        sample = load_sample(out)
        assert set(sample) == {"pixels", "expected:probs"}
        probs = runtime.run({"pixels": sample["pixels"]})["probs"]
        assert probs.shape == (sample["pixels"].shape[0], 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
        np.testing.assert_allclose(sample["expected:probs"], probs, rtol=1e-5, atol=1e-6)
        tolerance = v["health_check"]["tolerance"]
        assert tolerance == REFERENCE_TOLERANCE[preset.precision]
        check_references({"probs": probs}, reference_outputs(bundle.file_path("sample")), tolerance)
    finally:
        runtime.close()


def test_int8_is_quantized_qdq_and_smaller(digits, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "int8"
    result = invoke_convert(
        digits.onnx, "-t", "onnx-cpu-int8", "--calibration", digits.calibration, "-o", out
    )
    assert result.exit_code == 0, result.stderr
    model = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # per-channel: the weight scales are vectors, one per output channel
    inits = {i.name: i for i in model.graph.initializer}
    scales = [
        inits[n.input[1]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[1] in inits and inits[n.input[1]].dims
    ]
    assert scales, "expected per-channel weight scales"
    assert (out / "model.onnx").stat().st_size < digits.onnx.stat().st_size * 0.6


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_methods_are_selectable(digits, tmp_path: Path, method: str) -> None:
    out = tmp_path / method
    result = invoke_convert(
        digits.onnx, "-t", "onnx-cpu-int8", "--calibration", digits.calibration,
        "--calibration-method", method, "--labels", digits.labels,
        "--validation", digits.validation, "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    assert manifest.converter["options"]["calibration_method"] == method
    assert manifest.validation["accuracy_drop_points"] <= 2.0


def test_onnx_as_is_bundles_the_file_unchanged(digits, tmp_path: Path) -> None:
    out = tmp_path / "asis"
    result = invoke_convert(digits.onnx, "-t", "onnx-as-is", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert (out / "model.onnx").read_bytes() == digits.onnx.read_bytes()
    manifest = check_bundle(out).manifest
    assert manifest.precision == "fp32"
    assert manifest.validation["data"] == "generated"
    assert manifest.validation["max_abs_err"] == 0.0


def test_precision_auto_keeps_the_fastest_within_budget(digits, tmp_path: Path) -> None:
    out = tmp_path / "auto"
    result = invoke_convert(
        digits.onnx, "-t", "onnx-cpu-int8", "--precision", "auto",
        "--calibration", digits.calibration, "--validation", digits.validation,
        "--labels", digits.labels, "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    candidates = manifest.validation["candidates"]
    assert {c["target"] for c in candidates} == {
        "onnx-cpu-fp32", "onnx-cpu-int8", "onnx-cpu-int8-dynamic"
    }  # fmt: skip
    # the chosen one passes, and no other passing one is faster beyond both spreads
    chosen = next(c for c in candidates if c["target"] == manifest.target)
    assert chosen["within_budget"]
    for c in candidates:
        if c["within_budget"]:
            assert chosen["p50_ms"] - c["p50_ms"] <= chosen["spread_ms"] + c["spread_ms"], c


def test_precision_moves_within_the_family(digits, tmp_path: Path) -> None:
    out = tmp_path / "dyn"
    result = invoke_convert(digits.onnx, "-t", "onnx-cpu-int8", "--precision", "dynamic", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert check_bundle(out).manifest.target == "onnx-cpu-int8-dynamic"


def test_fp16_repairs_a_model_onnxruntime_would_refuse(tmp_path: Path) -> None:
    """onnxconverter-common casts Celu's input to fp16, but Celu's schema is float-only, so ORT
    refuses the graph; the converter keeps Celu in fp32 and says so in the manifest."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Celu", ["h"], ["c"], name="celu"),
            helper.make_node("Softmax", ["c"], ["y"]),
        ],
        "celu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "celu.onnx"))

    out = tmp_path / "fp16"
    result = invoke_convert(tmp_path / "celu.onnx", "-t", "onnx-gpu-fp16", "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    assert "kept fp32: Celu" in manifest.converter["options"]["fp16_converter"]
    assert manifest.validation["cosine"] > 0.999
    converted = onnx.load(str(out / "model.onnx"))
    assert any(i.data_type == TensorProto.FLOAT16 for i in converted.graph.initializer)
