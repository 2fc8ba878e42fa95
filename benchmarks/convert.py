"""Converter benchmark: every target against its fp32 baseline, on two models made here.

Models (no download; scikit-learn ships the digits):
- ``digits-mlp``: 64-64-10 MLP trained with scikit-learn (4.8 k parameters);
- ``digits-cnn``: a 1.15 M parameter CNN trained with Keras on the digits upsampled to
  32x32x3 (conv32-conv64-pool-conv128-pool-dense128-dense10), the same weights rebuilt as ONNX.

For each target it prints the size ratio, the p50 latency ratio at batch 1 and 32, and the
accuracy delta (points) against the fp32 target of the same runtime (``onnx-cpu-fp32`` for
ONNX/ORT targets, ``tflite-fp32`` for TFLite), all measured through the agent's runtime
(:func:`edgeserve.runtimes.load_runtime`).

Run: ``.venv/bin/python benchmarks/convert.py [--epochs 4] [--models digits-mlp,digits-cnn]
[--threads 1]``
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np
from edgeserve.converter import ConvertOptions, convert_model
from edgeserve.converter.latency import first_batch, measure_alternated
from edgeserve.converter.loaders import quiet_native_stderr
from edgeserve.converter.validate import open_bundle_runner
from support.converter import (
    conv_data,
    conv_keras,
    conv_onnx,
    digits_data,
    digits_keras,
    digits_onnx,
    train_digits_mlp,
)

from edgeserve.bundle import read_bundle

ONNX_TARGETS = (
    "onnx-cpu-fp32",
    "onnx-cpu-int8",
    "onnx-cpu-int8-dynamic",
    "onnx-gpu-fp16",
    "onnx-npu-int8",
    "ort-cpu-fp32",
    "ort-cpu-int8",
)
TFLITE_TARGETS = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8")
ROUNDS = 3  # latency rounds per bundle; the best p50 of the rounds is reported
# One intra-op thread: on a shared 2-core machine a 2-thread pool waits for the busy core, which
# made the ratios swing by 2-4x between runs; one thread measures the kernels, not the neighbours.
THREADS = [1]  # set from --threads


def _models(work: Path, names: set[str], epochs: int) -> dict[str, dict[str, Path]]:
    digits = digits_data()
    models: dict[str, dict[str, Path]] = {}
    if "digits-mlp" in names:
        weights = train_digits_mlp(digits)
        d = work / "mlp"
        d.mkdir()
        np.save(d / "calib.npy", digits.x_train[:300])
        np.save(d / "val.npy", digits.x_test)
        np.save(d / "labels.npy", digits.y_test)
        models["digits-mlp"] = {
            "onnx": digits_onnx(d / "m.onnx", weights),
            "keras": digits_keras(d / "m.keras", weights),
            "calib": d / "calib.npy",
            "val": d / "val.npy",
            "labels": d / "labels.npy",
        }
    if "digits-cnn" in names:
        d = work / "cnn"
        d.mkdir()
        x_tr, _, x_te, y_te = conv_data(digits)
        np.save(d / "calib.npy", x_tr[:200])
        np.save(d / "val.npy", x_te)
        np.save(d / "labels.npy", y_te)
        start = time.perf_counter()
        with quiet_native_stderr():
            keras_path = conv_keras(digits, d / "m.keras", epochs=epochs)
        print(f"# trained digits-cnn in {time.perf_counter() - start:.0f} s", flush=True)
        models["digits-cnn"] = {
            "onnx": conv_onnx(keras_path, d / "m.onnx"),
            "keras": keras_path,
            "calib": d / "calib.npy",
            "val": d / "val.npy",
            "labels": d / "labels.npy",
        }
    return models


def _convert(model: dict[str, Path], target: str, out: Path) -> dict[str, float]:
    source = model["keras"] if target.startswith("tflite") else model["onnx"]
    result = convert_model(
        ConvertOptions(
            model=source,
            target=target,
            calibration=model["calib"],
            validation=model["val"],
            labels=model["labels"],
            output=out,
        )
    )
    v = result.validation
    return {"size": float(v["converted"]["size_bytes"]), "acc": v["accuracy_converted"] * 100}


def _latency(model: dict[str, Path], out: Path, batch: int) -> float:
    """p50 ms of one call with ``batch`` rows through the agent's runtime (nan if impossible)."""
    bundle = read_bundle(out)
    fixed = bundle.manifest.inputs[0].shape[0]
    if fixed not in (-1, batch):
        return float("nan")
    quant = bundle.manifest.converter.get("options", {}).get("io_quantization", {})
    runner = open_bundle_runner(bundle, quant, threads=THREADS[0])
    try:
        feed = first_batch({bundle.manifest.inputs[0].name: np.load(model["val"])}, batch)
        return measure_alternated([(runner, feed)], rounds=1)[0]["p50_ms"]
    finally:
        runner.close()


def main() -> None:
    """Build both models, convert to every target, print one table per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="CNN training epochs")
    parser.add_argument("--models", default="digits-mlp,digits-cnn")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (0 = default)")
    args = parser.parse_args()
    THREADS[0] = args.threads
    # the GPU/NPU targets' provider fallback on this CPU-only machine is expected here
    logging.getLogger("edgeserve.runtimes.onnx").setLevel(logging.ERROR)
    print(
        f"# intra-op threads: {THREADS[0]}; best p50 of {ROUNDS} rounds per bundle\n"
        f"# machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}"
        f", Python {platform.python_version()}"
    )
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    print(f"# onnxruntime {onnxruntime.__version__}, providers {providers}")
    with tempfile.TemporaryDirectory(prefix="edgeserve-bench-") as tmp:
        work = Path(tmp)
        models = _models(work, set(args.models.split(",")), args.epochs)
        for name, model in models.items():
            print(f"\n## {name}  (ratios vs the fp32 target of the same runtime)")
            header = (
                f"{'target':<24}{'size':>10}{'size x':>8}{'p50 b1 ms':>11}{'b1 x':>7}"
                f"{'p50 b32 ms':>12}{'b32 x':>7}{'acc %':>8}{'delta pts':>10}"
            )
            print(header)
            rows: dict[str, dict[str, float]] = {}
            targets = ONNX_TARGETS + TFLITE_TARGETS
            for target in targets:
                with quiet_native_stderr():  # TensorFlow's C++ log lines, not ours
                    rows[target] = _convert(model, target, work / f"{name}-{target}")
            # The machine is shared: measure every bundle in turn, ROUNDS times, and keep each
            # one's best p50, so that a burst of load elsewhere does not decide a ratio.
            for key, batch in (("b1", 1), ("b32", 32)):
                for _ in range(ROUNDS):
                    for target in targets:
                        p50 = _latency(model, work / f"{name}-{target}", batch)
                        rows[target][key] = float(np.fmin(rows[target].get(key, np.nan), p50))
            for target in targets:
                base = rows["tflite-fp32" if target.startswith("tflite") else "onnx-cpu-fp32"]
                r = rows[target]
                print(
                    f"{target:<24}{r['size'] / 1024:>8.1f}Ki{r['size'] / base['size']:>7.2f}x"
                    f"{r['b1']:>11.3f}{r['b1'] / base['b1']:>6.2f}x"
                    + _ratio_cell(r["b32"], base["b32"])
                    + f"{r['acc']:>8.2f}{r['acc'] - base['acc']:>+10.2f}",
                    flush=True,
                )


def _ratio_cell(value: float, base: float) -> str:
    """``p50 ms`` and ``x`` columns; ``n/a`` where the bundle cannot run that batch (the NPU
    target's shapes are static, batch 1)."""
    if np.isnan(value):
        return f"{'n/a':>12}{'':>7}"
    return f"{value:>12.3f}{value / base:>6.2f}x"


if __name__ == "__main__":
    main()
