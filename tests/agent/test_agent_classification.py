"""Triton's classification extension as a pure function, and the labels file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgeserve.agent.serving.classification import classification_k, classify

from edgeserve.bundle import read_labels
from edgeserve.errors import BundleError, InferenceInputError


@pytest.mark.parametrize(
    ("array", "k", "labels", "batched", "expected"),
    [
        (
            np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32),
            2,
            ("a", "b", "c"),
            True,
            [[b"0.700000:1:b", b"0.200000:2:c"], [b"0.500000:0:a", b"0.250000:1:b"]],
        ),
        (np.array([3, 9, 9, 1], np.int64), 3, None, False, [b"9:1", b"9:2", b"3:0"]),
        (np.array([0.5, 0.25], np.float32), 5, ("x",), False, [b"0.500000:0:x", b"0.250000:1"]),
        (np.array([[1.0, 2.0]], np.float64), 1, None, False, [b"2.000000:1"]),
    ],
    ids=["batched-labels", "ints-ties-keep-index-order", "k-over-classes", "unbatched-flattens"],
)
def test_agent_classification_top_k(
    array: np.ndarray, k: int, labels: tuple[str, ...] | None, batched: bool, expected: list
) -> None:
    assert classify(array, k, labels, batched, "y").tolist() == expected


def test_agent_classification_refuses_bad_requests() -> None:
    for value in (0, -1, True, "2", 1.5):
        with pytest.raises(InferenceInputError, match="positive integer"):
            classification_k(value, "y")
    assert classification_k(3, "y") == 3
    with pytest.raises(InferenceInputError, match="numeric"):
        classify(np.array([b"a"], dtype=object), 1, None, False, "y")


def test_agent_classification_labels_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(b"cat\r\ndog\n\nbird\n")
    assert read_labels(path) == ("cat", "dog", "", "bird")  # an empty line is a label too
    path.write_bytes(b"")
    with pytest.raises(BundleError, match="empty"):
        read_labels(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(BundleError, match="UTF-8"):
        read_labels(path)
    with pytest.raises(BundleError, match="cannot read"):
        read_labels(tmp_path / "missing.txt")
