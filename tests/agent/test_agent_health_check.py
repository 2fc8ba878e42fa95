"""Agent.health_check against the reference outputs a bundle's sample.npz records
(``expected:<output>``, tolerance in ``validation.health_check``), on a real in-process agent
with ONNX Runtime; loaded and not-loaded versions take the same path."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeserve.agent.config import load_config
from edgeserve.agent.serving.core import Agent
from edgeserve.agent.serving.health import check_references
from support.agent import linear_reference
from support.models import make_onnx_linear

from edgeserve.bundle import write_bundle
from edgeserve.bundle.manifest import Manifest, TensorSpec
from edgeserve.errors import ModelError

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0]], dtype=np.float32)


def _bundle(
    directory: Path,
    version: int,
    expected: dict[str, np.ndarray] | None,
    validation: dict[str, Any] | None = None,
) -> Path:
    """Linear model (seed 0) whose sample.npz holds X and ``expected`` under expected:<name>."""
    model = make_onnx_linear(directory / f".m{version}.onnx", seed=0)
    buf = io.BytesIO()
    extra = {f"expected:{k}": v for k, v in (expected or {}).items()}
    np.savez(buf, x=X, **extra)
    manifest = Manifest(
        name="linear",
        version=version,
        format="onnx",
        precision="fp32",
        target="onnx-cpu-fp32",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("y", "FP32", (-1, 3)),),
        validation=validation or {},
    )
    out = directory / f"b{version}"
    write_bundle(
        out, manifest, {"model.onnx": (model, "model"), "sample.npz": (buf.getvalue(), "sample")}
    )
    return out


def _check_all(state: Path, bundles: dict[int, Path], active: int) -> dict[int, str]:
    """Install ``bundles`` (``active`` activated), run health_check on each in a real agent;
    version -> "ok" or the ModelError message."""

    async def main() -> dict[int, str]:
        config = load_config(None, {"state_dir": str(state)})
        agent = Agent(config)
        for version, path in sorted(bundles.items()):
            agent.store.install(path, activate=version == active)
        await agent.start()
        results = {}
        try:
            assert agent.active_versions() == {"linear": active}  # loaded: checked in place
            for version in bundles:
                try:
                    await agent.health_check("linear", version)
                    results[version] = "ok"
                except ModelError as exc:
                    results[version] = str(exc)
        finally:
            await agent.stop()
        return results

    return asyncio.run(main())


def test_agent_health_check_compares_outputs_with_recorded_references(tmp_path: Path) -> None:
    right = {"y": linear_reference(X, seed=0)}
    wrong = {"y": linear_reference(X, seed=5)}
    noisy = {"y": right["y"] + np.float32(0.02)}  # 2 % of the largest output (<= 1)
    bundles = {
        1: _bundle(tmp_path, 1, right),  # active, loaded
        2: _bundle(tmp_path, 2, wrong),  # not loaded: loaded temporarily
        3: _bundle(tmp_path, 3, None),  # no references: only finiteness
        4: _bundle(tmp_path, 4, noisy, {"health_check": {"tolerance": 0.01}}),
        5: _bundle(tmp_path, 5, noisy, {"health_check": {"tolerance": 0.05}}),
        6: _bundle(tmp_path, 6, {"y": right["y"][:1]}),
        7: _bundle(tmp_path, 7, right, {"health_check": {"tolerance": "loose"}}),
    }
    results = _check_all(tmp_path / "state", bundles, active=1)
    assert results[1] == "ok" and results[3] == "ok" and results[5] == "ok"
    assert "output y differs from the reference recorded at conversion" in results[2]
    assert "tolerance 0.01" in results[4]
    assert "shape [2, 3], the reference [1, 3]" in results[6]
    assert "validation.health_check.tolerance 'loose'" in results[7]


def test_agent_health_check_references_by_dtype() -> None:
    """Floats and quantized integers are compared by value; wide integers by shape only."""
    ref = np.array([[10, -20, 30]], dtype=np.int8)
    check_references({"q": ref + np.int8(2)}, {"q": ref}, 0.1)  # 2 LSB of 30: within 10 %
    with pytest.raises(ModelError, match="output q differs"):
        check_references({"q": ref + np.int8(5)}, {"q": ref}, 0.1)
    labels = np.array([3, 1], dtype=np.int64)
    check_references({"label": np.array([2, 1], dtype=np.int64)}, {"label": labels}, 0.01)
    with pytest.raises(ModelError, match="NaN"):
        check_references(
            {"y": np.array([np.nan], np.float32)}, {"y": np.array([1.0], np.float32)}, 0.5
        )
    with pytest.raises(ModelError, match="output y missing"):
        check_references({}, {"y": np.array([1.0], np.float32)}, 0.5)
    zeros = np.zeros(3, np.float32)
    check_references({"z": zeros + np.float32(0.001)}, {"z": zeros}, 0.01)  # absolute when 0
