"""Every TFLite target from Keras and SavedModel sources: bundles run in the agent's TFLite
runtime; full-integer int8 loses at most 1 accuracy point on the digits classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.converter import invoke_convert, load_sample

from edgeserve.bundle import check_bundle
from edgeserve.runtimes import load_runtime

pytestmark = pytest.mark.slow  # TensorFlow import and TFLite conversions


def _convert(digits, source: Path, target: str, out: Path, *extra: object):
    return invoke_convert(
        source, "--target", target, "--calibration", digits.calibration,
        "--validation", digits.validation, "--labels", digits.labels, "--output", out, *extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("target", "io_type", "budget"),
    [
        ("tflite-fp32", "float", 0.0),
        ("tflite-fp16", "float", 0.2),
        ("tflite-dynamic", "float", 1.0),
        ("tflite-int8", "float", 1.0),
        ("tflite-int8", "int8", 1.0),
    ],
    ids=["fp32", "fp16", "dynamic", "int8-float-io", "int8-int8-io"],
)
def test_tflite_target_from_keras(
    digits, digits_keras_path: Path, tmp_path: Path, target: str, io_type: str, budget: float
) -> None:
    out = tmp_path / "bundle"
    result = _convert(digits, digits_keras_path, target, out, "--io-type", io_type)
    assert result.exit_code == 0, result.stderr
    bundle = check_bundle(out)
    manifest = bundle.manifest
    assert manifest.format == "tflite" and manifest.target == target
    assert manifest.source["format"] == "keras"
    v = manifest.validation
    assert v["accuracy_original"] > 0.93
    assert (v["accuracy_original"] - v["accuracy_converted"]) * 100 <= budget

    # inputs are what the converted model says, including int8 I/O, named by its signature
    # (the Keras input's name), not by its tensor (serving_default_pixels:0)
    assert [s.name for s in manifest.inputs] == ["pixels"]
    assert [s.name for s in manifest.outputs] == ["output_0"]
    expected_dtype = "INT8" if io_type == "int8" else "FP32"
    assert manifest.inputs[0].datatype == expected_dtype
    assert manifest.inputs[0].shape == (-1, 64)
    sample = load_sample(out)
    feeds = {k: v for k, v in sample.items() if not k.startswith("expected:")}
    runtime = load_runtime(bundle)
    try:
        outputs = runtime.run(feeds)
    finally:
        runtime.close()
    ((out_name, probs),) = outputs.items()
    assert probs.shape == (next(iter(feeds.values())).shape[0], 10)
    # the reference outputs for the device's health check, in the output's own dtype
    assert set(sample) - set(feeds) == {f"expected:{out_name}"}
    expected = sample[f"expected:{out_name}"]
    assert expected.dtype == probs.dtype
    np.testing.assert_allclose(expected.astype(float), probs.astype(float), rtol=1e-5, atol=1e-6)
    if io_type == "int8":
        assert probs.dtype == np.int8
        assert "io_quantization" in manifest.converter["options"]


def test_tflite_int8_is_smaller_than_fp32(digits, digits_keras_path: Path, tmp_path: Path) -> None:
    sizes = {}
    for target in ("tflite-fp32", "tflite-int8"):
        out = tmp_path / target
        assert _convert(digits, digits_keras_path, target, out).exit_code == 0
        sizes[target] = check_bundle(out).manifest.model_file.size
    assert sizes["tflite-int8"] < 0.5 * sizes["tflite-fp32"]


def test_saved_model_and_h5_sources(digits, tmp_path: Path) -> None:
    import keras
    from support.converter import digits_keras

    h5 = digits_keras(tmp_path / "digits.h5", digits.weights)
    out = tmp_path / "from-h5"
    assert _convert(digits, h5, "tflite-fp32", out).exit_code == 0
    assert check_bundle(out).manifest.source["format"] == "keras"

    saved = tmp_path / "saved_model"
    keras.models.load_model(str(h5), compile=False).export(str(saved), verbose=False)
    out = tmp_path / "from-saved-model"
    result = _convert(digits, saved, "tflite-int8", out)
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    assert manifest.source["format"] == "savedmodel"
    assert [s.name for s in manifest.inputs] == ["pixels"]
    assert manifest.validation["accuracy_drop_points"] <= 1.0


def test_tflite_as_is_and_device_pick(digits, digits_keras_path: Path, tmp_path: Path) -> None:
    first = tmp_path / "fp32"
    assert _convert(digits, digits_keras_path, "tflite-fp32", first).exit_code == 0
    out = tmp_path / "asis"
    result = invoke_convert(first / "model.tflite", "-t", "tflite-as-is", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert (out / "model.tflite").read_bytes() == (first / "model.tflite").read_bytes()

    # rpi5 prefers onnx-cpu-int8, which a Keras model now reaches (through tf2onnx)
    out = tmp_path / "rpi5"
    result = invoke_convert(
        digits_keras_path, "--device", "rpi5", "--calibration", digits.calibration, "-o", out
    )
    assert result.exit_code == 0, result.stderr
    assert check_bundle(out).manifest.target == "onnx-cpu-int8"


def test_an_op_without_a_tflite_builtin_is_named(tmp_path: Path) -> None:
    import tensorflow as tf

    class Det(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3, 3], tf.float32, name="m")])
        def serve(self, m):  # type: ignore[no-untyped-def]
            return {"det": tf.linalg.det(m)}

    module = Det()
    saved = tmp_path / "det"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    out = tmp_path / "out"
    result = invoke_convert(saved, "-t", "tflite-fp32", "-o", out)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "tf.MatrixDeterminant" in line, line
    assert not out.exists()


def test_tflite_precision_auto_and_device_op_check(
    digits, digits_keras_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "auto"
    result = _convert(
        digits, digits_keras_path, "tflite-fp32", out, "--precision", "auto", "--device", "rpi4"
    )
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    candidates = manifest.validation["candidates"]
    assert {c["target"] for c in candidates} == {
        "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8"
    }  # fmt: skip
    # the chosen one passes, and no other passing one is faster beyond both spreads
    chosen = next(c for c in candidates if c["target"] == manifest.target)
    assert chosen["within_budget"]
    for c in candidates:
        if c["within_budget"]:
            assert chosen["p50_ms"] - c["p50_ms"] <= chosen["spread_ms"] + c["spread_ms"], c
    check = manifest.converter["options"]["device_check"]
    assert check["device"] == "rpi4" and check["tflite"].startswith("tflite-runtime")
    assert "FULLY_CONNECTED" in check["ops"]
