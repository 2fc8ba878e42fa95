"""Keras, SavedModel and PyTorch sources into the ONNX targets (tf2onnx, torch.onnx), judged
by the gate against the original framework, with the bundle served by the agent's runtime."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from support.converter import invoke_convert
from support.torch_digits import digits_factory_module, digits_pt2

from edgeserve.bundle import check_bundle
from edgeserve.runtimes import load_runtime

pytestmark = pytest.mark.slow  # TensorFlow / torch imports and exports


@pytest.fixture(scope="session")
def digits_pt2_path(digits) -> Path:
    return digits_pt2(digits.root / "digits.pt2", digits.weights)


def _convert(digits, *args: object):
    return invoke_convert(
        *args, "--calibration", digits.calibration, "--validation", digits.validation,
        "--labels", digits.labels,
    )  # fmt: skip


def _check_onnx_bundle(digits, out: Path, target: str, source_format: str, exporter: str):
    bundle = check_bundle(out)
    manifest = bundle.manifest
    assert manifest.target == target and manifest.source["format"] == source_format
    assert manifest.converter["options"]["onnx_export"]["exporter"].startswith(exporter)
    # names from the source's signature, the batch dimension still dynamic
    assert [(s.name, s.shape) for s in manifest.inputs] == [("pixels", (-1, 64))]
    assert [(s.name, s.shape) for s in manifest.outputs] == [("output_0", (-1, 10))]
    v = manifest.validation
    assert v["accuracy_original"] > 0.93
    assert (v["accuracy_original"] - v["accuracy_converted"]) * 100 <= 1.0
    assert v["converted"]["size_bytes"] > 0 and v["converted"]["latency_ms"]["p50_ms"] > 0
    x = np.load(digits.validation)
    y = np.load(digits.labels)
    runtime = load_runtime(bundle)
    try:
        for rows in (1, 3, len(x)):  # any batch size runs
            probs = runtime.run({"pixels": x[:rows]})["output_0"]
            assert probs.shape == (rows, 10)
        assert float(np.mean(probs.argmax(axis=1) == y)) > 0.92
    finally:
        runtime.close()
    return manifest


def test_keras_to_onnx_int8_through_tf2onnx(digits, digits_keras_path: Path, tmp_path: Path):
    out = tmp_path / "bundle"
    result = _convert(digits, digits_keras_path, "-t", "onnx-cpu-int8", "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = _check_onnx_bundle(digits, out, "onnx-cpu-int8", "keras", "tf2onnx")
    assert manifest.validation["quantized_nodes"]  # the int8 pass really quantized the graph


def test_savedmodel_to_ort_through_tf2onnx(digits, digits_keras_path: Path, tmp_path: Path):
    import keras

    saved = tmp_path / "saved"
    keras.models.load_model(digits_keras_path).export(str(saved), verbose=False)
    out = tmp_path / "bundle"
    result = _convert(digits, saved, "-t", "ort-cpu-fp32", "-o", out)
    assert result.exit_code == 0, result.stderr
    bundle = check_bundle(out)
    assert bundle.manifest.format == "ort" and bundle.manifest.source["format"] == "savedmodel"
    v = bundle.manifest.validation
    assert v["accuracy_converted"] == v["accuracy_original"]


def test_exported_program_to_onnx_int8(digits, digits_pt2_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = _convert(digits, digits_pt2_path, "-t", "onnx-cpu-int8", "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = _check_onnx_bundle(digits, out, "onnx-cpu-int8", "torch", "torch.onnx")
    # the weights are inside model.onnx: the bundle holds no external data file
    assert {f.role for f in manifest.files} == {"model", "sample"}


def test_torch_module_factory_to_onnx_int8(
    digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = digits_factory_module(tmp_path, digits.weights)
    np.save(tmp_path / "example.npy", np.load(digits.calibration)[:2])
    out = tmp_path / "bundle"
    result = _convert(
        digits, "--torch", spec, "--example-input", "example.npy", "-t", "onnx-cpu-int8",
        "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = _check_onnx_bundle(digits, out, "onnx-cpu-int8", "torch", "torch.onnx")
    assert manifest.name == "make" and manifest.source["filename"] == spec


def test_without_onnxscript_the_legacy_exporter_runs(
    digits, digits_pt2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    out = tmp_path / "bundle"
    result = _convert(digits, digits_pt2_path, "-t", "onnx-cpu-fp32", "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = _check_onnx_bundle(digits, out, "onnx-cpu-fp32", "torch", "torch.onnx (legacy")
    assert manifest.converter["options"]["onnx_export"]["dynamo_error"] == (
        "onnxscript is not installed"
    )


def test_the_gate_judges_an_exported_model(digits, digits_pt2_path: Path, tmp_path: Path):
    # int8 agrees with the original to cosine ~0.9999, short of an (absurd) 0.999999 floor:
    # refused against the PyTorch original, nothing written
    out = tmp_path / "bundle"
    result = invoke_convert(
        digits_pt2_path, "-t", "onnx-cpu-int8", "--calibration", digits.calibration,
        "--min-cosine", "0.999999", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "cosine" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--torch", "nocolon"], "module:factory"),
        (["--torch", "no_such_module_here:make"], "cannot import"),
        (["--torch", "json:loads"], "--example-input"),
        (["--example-input", "x.npy", "m.onnx"], "--torch"),
    ],
    ids=["bad-spec", "no-module", "no-example", "example-without-torch"],
)
def test_torch_option_errors(tmp_path: Path, args: list[str], words: str) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    result = invoke_convert(*args, "-t", "onnx-cpu-fp32", "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_torch_to_tflite_without_litert_torch_says_how(digits, digits_pt2_path: Path, tmp_path):
    # litert-torch lives in a venv of its own (pyproject.toml, convert-torch-tflite)
    result = invoke_convert(digits_pt2_path, "-t", "tflite-fp32", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "convert-torch-tflite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_not_an_exported_program(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt2"
    bad.write_text(json.dumps({"not": "a program"}))
    result = invoke_convert(bad, "-t", "onnx-cpu-fp32", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "ExportedProgram" in result.stderr
