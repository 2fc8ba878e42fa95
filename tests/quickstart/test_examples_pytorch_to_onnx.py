"""examples/pytorch-to-onnx runs as written: torch.export -> onnx-cpu-int8 -> batch job over a
folder (scripts/test installs torch's CPU wheel)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.quickstart import run_example


@pytest.mark.slow
def test_examples_pytorch_to_onnx(tmp_path: Path) -> None:
    out = run_example("pytorch-to-onnx", tmp_path)
    assert "onnx-cpu-int8" in out and "cosine / SNR" in out
    assert "installed digits-torch version 1" in out
    outputs = sorted((tmp_path / "work" / "outputs").glob("part-*.npy"))
    inputs = sorted((tmp_path / "work" / "inputs").glob("part-*.npy"))
    assert [p.name for p in outputs] == [p.name for p in inputs] and len(outputs) == 5
    match = re.search(r"batch job: (\d+) rows, ([\d.]+)% correct", out)
    assert match and int(match.group(1)) == 450 and float(match.group(2)) >= 85.0
