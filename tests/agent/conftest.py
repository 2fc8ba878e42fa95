"""Agent fixtures: stores with installed bundles, running agent processes, small models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from edgeserve.agent.store import ModelStore
from support.agent import AgentProcess, start_agent
from support.models import make_linear_bundle

from edgeserve.bundle import Bundle, write_bundle
from edgeserve.manifest import Manifest, TensorSpec


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A store with linear v1 (active) installed."""
    state = tmp_path / "state"
    ModelStore(state).install(make_linear_bundle(tmp_path / "b1", version=1).path)
    return state


@pytest.fixture
def running_agent(state_dir: Path) -> Iterator[AgentProcess]:
    """An agent process serving linear v1 with default settings."""
    agent = start_agent(state_dir)
    yield agent
    agent.stop()


def linear_reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What ``make_linear_bundle(seed=seed)`` computes, in numpy: softmax(x @ W + b)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    logits = x.astype(np.float32) @ w + b
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def make_fp16_bundle(directory: Path, name: str = "half", version: int = 1) -> Bundle:
    """An ONNX model y = 2 * x on FP16 tensors [-1, 4] (for the binary FP16 path)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 4])],
        [numpy_helper.from_array(np.array(2, dtype=np.float16), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory.parent / f".{name}.onnx"
    directory.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    manifest = Manifest(
        name=name,
        version=version,
        format="onnx",
        precision="fp16",
        target="onnx-cpu-fp16",
        providers=("CPUExecutionProvider",),
        inputs=(TensorSpec("x", "FP16", (-1, 4)),),
        outputs=(TensorSpec("y", "FP16", (-1, 4)),),
    )
    return write_bundle(directory, manifest, {"model.onnx": (path, "model")})
