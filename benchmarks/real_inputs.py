"""Inputs for the real-model benchmark, rendered with Pillow: text lines, scenes with text, and
document pages with a title, paragraphs and a figure box. Deterministic for a seed.

Normalisation follows each model's own preprocessing: PaddleOCR detection uses ImageNet mean/std
on [0, 1] pixels, recognition and direction classification map pixels to [-1, 1], YOLOv8 and
MediaPipe take [0, 1] RGB.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

__all__ = ["document_pages", "text_lines", "text_scenes"]

FONTS = [
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"),
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"),
]
WORDS = ("edge", "model", "serve", "fleet", "device", "quantize", "latency", "Invoice",
         "Total", "2026", "12.50", "Order", "No", "Date", "Berlin", "Paris", "tensor", "batch",
         "ONNX")  # fmt: skip
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def _font(rng: np.random.Generator, size: int):
    from PIL import ImageFont

    fonts = [f for f in FONTS if f.is_file()]
    if not fonts:
        return ImageFont.load_default()
    return ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)


def _phrase(rng: np.random.Generator, words: int) -> str:
    picked = [WORDS[int(i)] for i in rng.integers(len(WORDS), size=words)]
    if rng.random() < 0.3:
        picked.append("".join(rng.choice(list(string.digits), size=4)))
    return " ".join(picked)


def _chw(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0


def text_lines(
    rows: int, seed: int, size: tuple[int, int], rotate_half: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Single text lines ``[rows, 3, H, W]`` in [-1, 1]; labels 1 where rotated 180 degrees."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = size
    out, labels = [], []
    for i in range(rows):
        shade = int(rng.integers(200, 256))
        img = Image.new("RGB", (w, h), (shade, shade, shade))
        draw = ImageDraw.Draw(img)
        ink = int(rng.integers(0, 60))
        draw.text((4, 6), _phrase(rng, 2), fill=(ink, ink, ink), font=_font(rng, int(h * 0.6)))
        rotated = rotate_half and i % 2 == 1
        if rotated:
            img = img.rotate(180)
        out.append(_chw(img) * 2.0 - 1.0)
        labels.append(int(rotated))
    return np.stack(out).astype(np.float32), np.asarray(labels, np.int64)


def text_scenes(rows: int, seed: int, size: tuple[int, int]) -> np.ndarray:
    """Images with several text lines at random places, ImageNet-normalised ``[rows, 3, H, W]``."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for _ in range(rows):
        bg = tuple(int(v) for v in rng.integers(150, 256, size=3))
        img = Image.new("RGB", (w, h), bg)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 9))):
            x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h - 40))
            ink = tuple(int(v) for v in rng.integers(0, 80, size=3))
            draw.text((x, y), _phrase(rng, 3), fill=ink, font=_font(rng, int(rng.integers(16, 36))))
        out.append((_chw(img) - _IMAGENET_MEAN) / _IMAGENET_STD)
    return np.stack(out).astype(np.float32)


def document_pages(rows: int, seed: int, size: int) -> np.ndarray:
    """Document pages (title, paragraphs, a figure box, a caption) ``[rows, 3, S, S]`` in [0, 1]."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        img = Image.new("RGB", (size, size), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        s = size / 1024
        y = int(60 * s)
        draw.text((int(80 * s), y), _phrase(rng, 3).upper(), fill=(0, 0, 0),
                  font=_font(rng, max(8, int(44 * s))))  # fmt: skip
        y += int(90 * s)
        for _ in range(int(rng.integers(2, 4))):
            for _ in range(int(rng.integers(4, 8))):
                draw.text((int(80 * s), y), _phrase(rng, 8), fill=(20, 20, 20),
                          font=_font(rng, max(6, int(20 * s))))  # fmt: skip
                y += int(28 * s)
            y += int(30 * s)
        if y < size - int(300 * s):
            box = (int(150 * s), y, int(850 * s), y + int(220 * s))
            draw.rectangle(box, outline=(0, 0, 0), fill=(200, 220, 240), width=max(1, int(3 * s)))
            draw.text((int(150 * s), y + int(235 * s)), "Figure 1: " + _phrase(rng, 5),
                      fill=(0, 0, 0), font=_font(rng, max(6, int(18 * s))))  # fmt: skip
        out.append(_chw(img))
    return np.stack(out).astype(np.float32)
