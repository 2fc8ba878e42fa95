"""Bad input: one readable line on stderr, the right exit code, and no bundle left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.converter import invoke_convert


def _assert_one_line(result, code: int, *words: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _no_bundle(tmp_path: Path) -> None:
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))]
    assert leftovers == [], leftovers


def test_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_text("hello")
    result = invoke_convert(bogus, "-t", "onnx-cpu-fp32", "-o", tmp_path / "out")
    _assert_one_line(result, 2, "not a valid ONNX model")
    _no_bundle(tmp_path)


def test_an_unknown_extension(tmp_path: Path) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"\x00" * 10)
    _assert_one_line(invoke_convert(bogus, "-t", "onnx-cpu-fp32"), 2, "not a model")


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((10, 64), np.int64), ("dtype int64", "float32")),
        (np.zeros((10, 63), np.float32), ("shape [10, 63]", "[-1, 64]")),
        (np.zeros((10, 8, 8), np.float32), ("rank 2",)),
    ],
    ids=["dtype", "shape", "rank"],
)
def test_calibration_that_does_not_fit(digits, tmp_path: Path, array, words) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, array)
    result = invoke_convert(
        digits.onnx, "-t", "onnx-cpu-int8", "--calibration", calib, "-o", tmp_path / "out"
    )
    _assert_one_line(result, 2, "--calibration", *words)
    _no_bundle(tmp_path)


def test_npz_keys_must_be_the_input_names(digits, tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, image=np.zeros((4, 64), np.float32))
    result = invoke_convert(digits.onnx, "-t", "onnx-cpu-int8", "--calibration", calib)
    _assert_one_line(result, 2, "image", "pixels")


def test_not_an_array_file(digits, tmp_path: Path) -> None:
    calib = tmp_path / "calib.npy"
    calib.write_text("1,2,3")
    result = invoke_convert(digits.onnx, "-t", "onnx-cpu-int8", "--calibration", calib)
    _assert_one_line(result, 2, "not a .npy or .npz")


def test_labels_must_match_the_rows(digits, tmp_path: Path) -> None:
    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(3, np.int64))
    result = invoke_convert(
        digits.onnx, "-t", "onnx-cpu-fp32", "--validation", digits.validation, "--labels", labels
    )
    _assert_one_line(result, 2, "3 labels")


def test_static_int8_needs_calibration(digits, tmp_path: Path) -> None:
    result = invoke_convert(digits.onnx, "-t", "onnx-cpu-int8", "-o", tmp_path / "out")
    _assert_one_line(result, 2, "needs --calibration")
    _no_bundle(tmp_path)


def test_unknown_target_and_missing_target(digits) -> None:
    _assert_one_line(invoke_convert(digits.onnx, "-t", "onnx-tpu"), 2, "onnx-cpu-int8")
    _assert_one_line(invoke_convert(digits.onnx), 2, "--target", "--device")


def test_missing_model_is_a_usage_error() -> None:
    result = invoke_convert("-t", "onnx-cpu-fp32")
    assert result.exit_code == 2
    assert "MODEL" in result.stderr


def test_onnx_to_tflite_says_how(digits, tmp_path: Path) -> None:
    result = invoke_convert(digits.onnx, "-t", "tflite-int8", "--calibration", digits.calibration)
    _assert_one_line(result, 2, "onnx2tf", "saved_model")


def test_existing_output_is_kept_without_force(digits, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _assert_one_line(invoke_convert(digits.onnx, "-t", "onnx-cpu-fp32", "-o", out), 1, "--force")
    assert (out / "keep.txt").read_text() == "mine"
    result = invoke_convert(digits.onnx, "-t", "onnx-cpu-fp32", "-o", out, "--force")
    assert result.exit_code == 0, result.stderr
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()


def test_unwritable_output(digits, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke_convert(digits.onnx, "-t", "onnx-cpu-fp32", "-o", blocker / "out")
    _assert_one_line(result, 1, "cannot write")


def test_max_accuracy_drop_exceeded_writes_nothing(digits, tmp_path: Path) -> None:
    # calibration on dimmed images: activation ranges far too small, so int8 clips and loses
    dim = tmp_path / "dim.npy"
    np.save(dim, np.load(digits.calibration) * 0.02)
    out = tmp_path / "out"
    result = invoke_convert(
        digits.onnx, "-t", "onnx-cpu-int8", "--calibration", dim,
        "--validation", digits.validation, "--labels", digits.labels,
        "--max-accuracy-drop", "1", "-o", out,
    )  # fmt: skip
    _assert_one_line(result, 1, "refused", "classify accuracy", "--max-accuracy-drop 1")
    _no_bundle(tmp_path)


def test_max_accuracy_drop_met_writes_the_bundle(digits, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke_convert(
        digits.onnx, "-t", "onnx-cpu-int8", "--calibration", digits.calibration,
        "--validation", digits.validation, "--labels", digits.labels,
        "--max-accuracy-drop", "1", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (out / "manifest.json").is_file()


def test_max_accuracy_drop_without_a_measure(tmp_path: Path) -> None:
    import onnx
    from onnx import helper
    from support.models import make_onnx_linear

    # a regression model (one output value): no top-1, no labels -> nothing to measure
    model = onnx.load(str(make_onnx_linear(tmp_path / "lin.onnx", out_features=1)))
    model.graph.node[-1].CopyFrom(helper.make_node("Identity", ["logits"], ["y"]))
    onnx.save(model, str(tmp_path / "reg.onnx"))
    result = invoke_convert(
        tmp_path / "reg.onnx", "-t", "onnx-cpu-fp32", "--max-accuracy-drop", "1"
    )
    _assert_one_line(result, 2, "--labels")


def test_list_targets_needs_no_model() -> None:
    from edgeserve.converter.targets import TARGETS

    result = invoke_convert("--list-targets")
    assert result.exit_code == 0
    for name in TARGETS:
        assert f" {name} " in result.stdout


@pytest.mark.slow
def test_real_process_stderr_is_one_line_even_with_tensorflow(tmp_path: Path) -> None:
    bogus = tmp_path / "model.keras"
    bogus.write_bytes(b"not a zip")
    proc = subprocess.run(
        [sys.executable, "-c", "from edgeserve.cli import main; main()", "convert", str(bogus),
         "-t", "tflite-fp32", "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a loadable Keras model" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
