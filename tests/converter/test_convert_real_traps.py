"""What real exports do to a quantizer, reproduced on generated models, and what the converter
does about it: pre-processing that falls back, dynamic int8 that quantizes or refuses, dynamic
dimensions kept, task-level gates that refuse broken bundles, selective quantization."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from edgeserve.converter.build import Built
from edgeserve.converter.evaluate import Candidate, choose
from edgeserve.converter.targets import TARGETS
from support.converter import invoke_convert
from support.real_traps import (
    ctc_like_recognizer,
    fp16_overflow_model,
    paddle_like_segmenter,
    yolo_like_detector,
)

from edgeserve.bundle import check_bundle
from edgeserve.runtimes import load_runtime

RNG = np.random.default_rng(7)


def _one_line(result, code: int, *words: str) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("traps")
    out = {
        "seg": paddle_like_segmenter(root / "seg.onnx"),
        "yolo": yolo_like_detector(root / "yolo.onnx"),
        "ctc": ctc_like_recognizer(root / "ctc.onnx"),
        "f16": fp16_overflow_model(root / "f16.onnx"),
    }
    data = {
        "seg.npy": RNG.standard_normal((8, 3, 24, 32)),
        "yolo.npy": RNG.random((16, 3, 32, 32)),
        "ctc.npy": RNG.standard_normal((16, 1, 8, 64)),
        "f16.npy": RNG.standard_normal((16, 8)),
    }
    for name, array in data.items():
        np.save(root / name, array.astype(np.float32))
        out[name] = root / name
    return out


def test_symbolic_inference_failure_falls_back_and_int8_shrinks(
    files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # ORT writes sym_shape_infer_temp.onnx into the CWD
    out = tmp_path / "seg8"
    result = invoke_convert(
        files["seg"], "-t", "onnx-cpu-int8", "--calibration", files["seg.npy"],
        "--task", "segment", "--max-accuracy-drop", "5", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg8"]  # nothing left in the CWD
    manifest = check_bundle(out).manifest
    passes = {p["pass"]: p for p in manifest.converter["passes"]}
    assert passes["opset"]["detail"] == "11 -> 13"
    assert passes["symbolic-shape-inference"]["status"] == "failed"
    assert passes["ort-basic-optimization"]["detail"].startswith("fallback")
    assert "passes" in result.stdout and "fallback" in result.stdout
    model = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops and "Constant" not in ops  # folded and fused
    assert manifest.validation["quantized_nodes"]["Conv"] == 3
    assert manifest.validation["converted"]["size_bytes"] < 0.4 * files["seg"].stat().st_size
    assert manifest.inputs[0].shape == (-1, 3, -1, -1)  # H and W stay dynamic
    runtime = load_runtime(check_bundle(out))
    try:  # a size the calibration never had
        prob = runtime.run({"x": np.ones((1, 3, 40, 56), np.float32)})["prob"]
        assert prob.shape == (1, 1, 40, 56)
    finally:
        runtime.close()


def test_dynamic_int8_quantizes_constant_weight_matmuls(files, tmp_path: Path) -> None:
    out = tmp_path / "dyn"
    result = invoke_convert(
        files["ctc"], "-t", "onnx-cpu-int8-dynamic", "--validation", files["ctc.npy"],
        "--task", "ctc", "--max-accuracy-drop", "25", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    v = check_bundle(out).manifest.validation
    assert v["quantized_nodes"]["MatMul"] == 4  # 3 hidden + the classifier
    assert v["task"]["metric"] == "exact_string_agreement" and v["task"]["score"] >= 0.75
    assert "MatMul 4" in result.stdout
    assert v["converted"]["size_bytes"] < 0.5 * v["original"]["size_bytes"]


def test_dynamic_int8_with_nothing_to_quantize_is_refused(files, tmp_path: Path) -> None:
    out = tmp_path / "none"
    result = invoke_convert(files["seg"], "-t", "onnx-cpu-int8-dynamic", "-o", out,
                            "--validation", files["seg.npy"])  # fmt: skip
    _one_line(result, 1, "dynamic int8 quantized nothing")
    assert not out.exists()


def test_yolo_head_at_int8_is_refused_and_kept_in_float_it_passes(files, tmp_path: Path) -> None:
    args = ["-t", "onnx-cpu-int8", "--calibration", files["yolo.npy"], "--task", "detect"]
    out = tmp_path / "y8"
    line = _one_line(invoke_convert(files["yolo"], *args, "-o", out), 1, "box_f1@0.5")
    assert "head_concat" in line  # the sensitivity ranking names the culprit
    assert not out.exists()
    kept = tmp_path / "kept"
    result = invoke_convert(files["yolo"], *args, "--exclude-nodes", "head_*",
                            "--max-accuracy-drop", "10", "-o", kept)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(kept).manifest
    assert manifest.converter["options"]["excluded_nodes"] == ["head_concat"]
    assert manifest.validation["task"]["score"] >= 0.9


def test_precision_auto_finds_the_mixed_precision_bundle(files, tmp_path: Path) -> None:
    out = tmp_path / "auto"
    result = invoke_convert(
        files["yolo"], "-t", "onnx-cpu-int8", "--precision", "auto", "--task", "detect",
        "--calibration", files["yolo.npy"], "--max-accuracy-drop", "10", "--objective", "size",
        "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    v = check_bundle(out).manifest.validation
    by_name = {c["target"]: c for c in v["candidates"]}
    assert by_name["onnx-cpu-int8"]["within_budget"] is False
    assert "box_f1" in by_name["onnx-cpu-int8"]["refused"]
    mixed = [c for c in v["candidates"] if "+mixed" in c["target"]]
    assert mixed and mixed[-1]["within_budget"] and mixed[-1]["excluded_nodes"] >= 1
    assert mixed[0]["float_set"] == "sensitivity top 1"  # each trial names its float set
    assert v["sensitivity"][0]["node"] == "head_concat"
    assert v["failed_candidates"][0]["target"] == "onnx-cpu-int8-dynamic"
    # --objective size keeps the smallest bundle within the budget, not the fastest
    # (on this tiny model QDQ's own nodes may outweigh what int8 saves: whichever is smaller)
    passing = [c for c in v["candidates"] if c["within_budget"]]
    assert len(passing) >= 2
    assert v["chosen"] == min(passing, key=lambda c: c["size_bytes"])["target"]


def test_fp16_overflow_is_refused_naming_the_output(files, tmp_path: Path) -> None:
    out = tmp_path / "f16"
    result = invoke_convert(files["f16"], "-t", "onnx-gpu-fp16", "--validation",
                            files["f16.npy"], "-o", out)  # fmt: skip
    _one_line(result, 1, "onnx-gpu-fp16 refused", "output 'y'", "--min-snr-db 20")
    assert not out.exists()


def test_a_loosened_cosine_budget_is_explicit(files, tmp_path: Path) -> None:
    out = tmp_path / "seg16"
    strict = invoke_convert(files["seg"], "-t", "onnx-cpu-int8", "--calibration",
                            files["seg.npy"], "--min-snr-db", "60", "-o", out)  # fmt: skip
    _one_line(strict, 1, "SNR", "--min-snr-db 60")
    loose = invoke_convert(files["seg"], "-t", "onnx-cpu-int8", "--calibration",
                           files["seg.npy"], "--min-snr-db", "5", "--min-cosine", "0.9",
                           "-o", out)  # fmt: skip
    assert loose.exit_code == 0, loose.stderr
    budget = check_bundle(out).manifest.validation["budget"]
    assert budget["min_snr_db"] == 5 and budget["min_cosine"] == 0.9


def test_custom_op_is_named(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("FancyNorm", ["x"], ["y"], domain="com.example", name="norm0")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "custom.onnx"))
    result = invoke_convert(tmp_path / "custom.onnx", "-t", "onnx-cpu-fp32")
    _one_line(result, 1, "FancyNorm", "com.example", "norm0")


@pytest.mark.parametrize("what", ["calibration", "validation"])
def test_nan_in_data_names_the_file_and_row(files, tmp_path: Path, what: str) -> None:
    data = np.load(files["f16.npy"])
    data[5, 2] = np.nan
    bad = tmp_path / "bad.npy"
    np.save(bad, data)
    result = invoke_convert(files["f16"], "-t", "onnx-cpu-int8", f"--{what}", bad,
                            "--calibration" if what == "validation" else "--validation",
                            files["f16.npy"])  # fmt: skip
    _one_line(result, 2, f"--{what} bad.npy", "row 5", "NaN")


def test_external_data_is_read_counted_and_bundled(digits, tmp_path: Path) -> None:
    model = onnx.load(str(digits.onnx))
    ext = tmp_path / "ext.onnx"
    onnx.save_model(model, str(ext), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)  # fmt: skip
    total = ext.stat().st_size + (tmp_path / "ext.onnx.data").stat().st_size
    out = tmp_path / "asis"
    result = invoke_convert(ext, "-t", "onnx-as-is", "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = check_bundle(out).manifest
    assert manifest.validation["original"]["size_bytes"] == total
    assert manifest.validation["converted"]["size_bytes"] == total
    assert {f.path for f in manifest.files} >= {"model.onnx", "ext.onnx.data"}
    int8 = tmp_path / "int8"
    result = invoke_convert(ext, "-t", "onnx-cpu-int8", "--calibration", digits.calibration,
                            "--labels", digits.labels, "--validation", digits.validation,
                            "-o", int8)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    v = check_bundle(int8).manifest.validation
    assert v["converted"]["size_bytes"] < 0.6 * total  # measured against the whole source
    assert v["wall_time_s"] > 0 and "conversion wall time" in result.stdout


def _candidate(
    target: str, p50: float, spread: float, failure: str | None = None, size: int = 1
) -> Candidate:
    built = Built(TARGETS[target], None, {}, {}, {})  # type: ignore[arg-type]
    c = Candidate(built, {}, None, failure, size)
    c.latency = {"p50_ms": p50, "spread_ms": spread}
    return c


def test_auto_never_prefers_a_lead_inside_the_spread() -> None:
    fp32 = _candidate("onnx-cpu-fp32", 1.00, 0.05)
    noisy = _candidate("onnx-cpu-int8-dynamic", 0.93, 0.05)  # 0.07 lead < 0.10 spread
    assert choose([noisy, fp32], lambda: "") is fp32
    clear = _candidate("onnx-cpu-int8", 0.40, 0.05)
    assert choose([noisy, clear, fp32], lambda: "") is clear
    broken = _candidate("onnx-cpu-int8", 0.10, 0.01, failure="cosine 0.5")
    assert choose([broken, fp32], lambda: "") is fp32


def test_objective_size_keeps_the_smallest_bundle_within_the_budget() -> None:
    fp32 = _candidate("onnx-cpu-fp32", 1.00, 0.05, size=4000)
    slow_small = _candidate("onnx-cpu-int8", 1.50, 0.05, size=1200)
    broken_smaller = _candidate("onnx-cpu-int8", 0.50, 0.05, failure="box_f1 0.4", size=1000)
    candidates = [fp32, slow_small, broken_smaller]
    assert choose(candidates, lambda: "") is fp32  # latency: int8 is slower
    assert choose(candidates, lambda: "", "size") is slow_small  # size: never a refused one


def test_manifest_json_records_passes_and_alternated_latency(files, tmp_path: Path) -> None:
    out = tmp_path / "fp32"
    result = invoke_convert(files["f16"], "-t", "onnx-cpu-fp32", "--validation",
                            files["f16.npy"], "--threads", "1", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    lat = manifest["validation"]["original"]["latency_ms"]
    assert lat["rounds"] >= 3 and lat["spread_ms"] >= 0
    assert manifest["validation"]["converted"]["latency_ms"]["rounds"] == lat["rounds"]
    assert manifest["converter"]["passes"][0]["pass"] == "ort-basic-optimization"
    assert manifest["validation"]["outputs"]["y"]["snr_db"] is None  # inf: identical outputs


@pytest.mark.slow
def test_ort_log_is_silenced_unless_verbose(files, tmp_path: Path) -> None:
    import subprocess
    import sys

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from edgeserve.cli import main; main()", "convert",
             str(files["seg"]), "-t", "onnx-cpu-int8", "--calibration", str(files["seg.npy"]),
             "--task", "segment", "--max-accuracy-drop", "5", "--force",
             "-o", str(tmp_path / "out"), *extra],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip

    quiet = run()
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # symbolic inference failed inside, and nothing was printed
    loud = run("-v")
    assert loud.returncode == 0, loud.stderr
    assert loud.stderr.strip()  # ORT's own log and the quantizer's warnings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
