"""PyTorch -> every TFLite precision through litert-torch, run as `edgeserve convert` in the
venv scripts/test builds for it (.venv-litert: litert-torch cannot share the main one, see
pyproject.toml); the bundles are then checked and served here, in the agent's runtime."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.torch_digits import digits_factory_module, digits_pt2

from edgeserve.bundle import check_bundle
from edgeserve.runtimes import load_runtime

pytestmark = pytest.mark.slow  # a process per conversion, importing torch and litert-torch

LITERT_EDGESERVE = Path(__file__).resolve().parents[2] / ".venv-litert" / "bin" / "edgeserve"


@pytest.fixture(scope="module")
def litert_edgeserve() -> Path:
    if not LITERT_EDGESERVE.is_file():
        pytest.fail(f"{LITERT_EDGESERVE} is missing: scripts/test builds it")
    return LITERT_EDGESERVE


def _convert(exe: Path, digits, cwd: Path, *args: object) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(exe), "convert", *(str(a) for a in args), "--calibration", str(digits.calibration),
        "--validation", str(digits.validation), "--labels", str(digits.labels),
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def _check(digits, out: Path, target: str, budget_points: float) -> dict:
    bundle = check_bundle(out)
    manifest = bundle.manifest
    assert manifest.format == "tflite" and manifest.target == target
    assert manifest.source["format"] == "torch"
    assert [s.name for s in manifest.inputs] == ["pixels"]  # forward()'s name, not args_0
    assert [s.name for s in manifest.outputs] == ["output_0"]
    v = manifest.validation
    assert v["accuracy_original"] > 0.93
    assert (v["accuracy_original"] - v["accuracy_converted"]) * 100 <= budget_points
    x = np.load(digits.validation)[:1]
    runtime = load_runtime(bundle)
    try:
        spec = manifest.inputs[0]
        q = manifest.converter["options"].get("io_quantization", {}).get("pixels")
        feed = x if q is None else np.round(x / q["scale"] + q["zero_point"]).astype(np.int8)
        assert runtime.run({spec.name: feed})["output_0"].shape == (1, 10)
    finally:
        runtime.close()
    return manifest.converter["options"]


@pytest.mark.parametrize(
    ("target", "budget"),
    [("tflite-fp32", 0.0), ("tflite-fp16", 0.5), ("tflite-dynamic", 1.0), ("tflite-int8", 1.0)],
    ids=["fp32", "fp16", "dynamic", "int8"],
)
def test_exported_program_to_tflite(
    litert_edgeserve: Path, digits, tmp_path: Path, target: str, budget: float
) -> None:
    pt2 = digits_pt2(tmp_path / "digits.pt2", digits.weights)
    out = tmp_path / "bundle"
    done = _convert(litert_edgeserve, digits, tmp_path, pt2, "-t", target, "-o", out)
    assert done.returncode == 0, done.stderr
    options = _check(digits, out, target, budget)
    if target == "tflite-int8":
        assert options["io_type"] == "int8" and "pixels" in options["io_quantization"]


def test_torch_module_to_tflite_int8(litert_edgeserve: Path, digits, tmp_path: Path) -> None:
    spec = digits_factory_module(tmp_path, digits.weights)
    np.save(tmp_path / "example.npy", np.load(digits.calibration)[:2])
    out = tmp_path / "bundle"
    done = _convert(
        litert_edgeserve, digits, tmp_path, "--torch", spec, "--example-input", "example.npy",
        "-t", "tflite-int8", "-o", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _check(digits, out, "tflite-int8", 1.0)
