"""Converter fixtures: the digits classifier trained once per session, its data on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support.converter import digits_data, digits_onnx, train_digits_mlp


@dataclass(frozen=True)
class DigitsFiles:
    """The trained digits MLP as ONNX, its calibration/validation/label files and weights."""

    onnx: Path
    calibration: Path
    validation: Path
    labels: Path
    root: Path
    weights: object


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsFiles:
    """Train the 64-64-10 digits MLP (scikit-learn, ~2 s) and write it with its data."""
    root = tmp_path_factory.mktemp("digits")
    data = digits_data()
    weights = train_digits_mlp(data)
    np.save(root / "calibration.npy", data.x_train[:300])
    np.save(root / "validation.npy", data.x_test)
    np.save(root / "labels.npy", data.y_test)
    return DigitsFiles(
        onnx=digits_onnx(root / "digits.onnx", weights),
        calibration=root / "calibration.npy",
        validation=root / "validation.npy",
        labels=root / "labels.npy",
        root=root,
        weights=weights,
    )


@pytest.fixture(scope="session")
def digits_keras_path(digits: DigitsFiles) -> Path:
    """The same MLP as a Keras ``.keras`` file (imports TensorFlow once per session)."""
    from support.converter import digits_keras

    return digits_keras(digits.root / "digits.keras", digits.weights)  # type: ignore[arg-type]
