"""examples/keras-to-tflite runs as written: Keras -> tflite-int8 -> agent -> tritonclient."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.quickstart import run_example


@pytest.mark.slow
def test_examples_keras_to_tflite(tmp_path: Path) -> None:
    out = run_example("keras-to-tflite", tmp_path)
    assert "tflite-int8" in out and "accuracy" in out  # the converter's table
    assert "installed digits-cnn version 1" in out
    results = re.findall(
        r"32 digits through tritonclient \((JSON|binary)\): ([\d.]+)% correct", out
    )
    assert [kind for kind, _ in results] == ["JSON", "binary"], out[-3000:]
    assert all(float(pct) >= 85.0 for _, pct in results)
    bundle = tmp_path / "work" / "bundle"
    assert (bundle / "manifest.json").exists() and (bundle / "model.tflite").exists()
