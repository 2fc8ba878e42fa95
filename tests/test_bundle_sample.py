"""The sample file format (edgeserve.bundle.sample): inputs and recorded reference outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeserve.bundle.manifest import Manifest
from edgeserve.bundle.sample import (
    DEFAULT_TOLERANCE,
    REFERENCE_TOLERANCE,
    encode_sample,
    health_check_record,
    read_sample,
    reference_outputs,
    reference_tolerance,
    tolerance_for,
)
from edgeserve.errors import BundleError, ModelError


def test_sample_round_trip_splits_inputs_and_references(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.ones((2, 1), dtype=np.float32)
    path = tmp_path / "sample.npz"
    path.write_bytes(encode_sample({"x": x}, {"y": y}))
    with np.load(path) as raw:
        assert sorted(raw.files) == ["expected:y", "x"]
    sample = read_sample(path)
    assert list(sample.inputs) == ["x"] and list(sample.references) == ["y"]
    np.testing.assert_array_equal(sample.inputs["x"], x)
    np.testing.assert_array_equal(reference_outputs(path)["y"], y)
    assert reference_outputs(None) == {}


def test_sample_without_references_and_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    path.write_bytes(encode_sample({"x": np.zeros(2)}))
    assert read_sample(path).references == {}
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ModelError):
        read_sample(bad)


def test_sample_refuses_input_named_like_a_reference() -> None:
    with pytest.raises(BundleError):
        encode_sample({"expected:x": np.zeros(1)})


def _manifest(validation: dict) -> Manifest:
    return Manifest.from_dict(
        {
            "name": "m",
            "version": 1,
            "format": "onnx",
            "precision": "fp32",
            "target": "t",
            "providers": [],
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
            "files": [{"path": "model.onnx", "sha256": "0" * 64, "size": 1, "role": "model"}],
            "source": {},
            "converter": {"version": "0", "options": {}},
            "validation": validation,
            "created": "2026-01-01T00:00:00Z",
        }
    )


def test_tolerance_recorded_and_read_back() -> None:
    assert tolerance_for("fp32") == REFERENCE_TOLERANCE["fp32"]
    assert tolerance_for("unknown") == max(REFERENCE_TOLERANCE.values())
    record = health_check_record(0.05)
    assert reference_tolerance(_manifest({"health_check": record})) == 0.05
    assert reference_tolerance(_manifest({})) == DEFAULT_TOLERANCE
    with pytest.raises(ModelError):
        reference_tolerance(_manifest({"health_check": {"tolerance": 2}}))
