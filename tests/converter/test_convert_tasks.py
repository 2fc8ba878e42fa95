"""Task scorers on hand-made outputs: each convention in the module docstring, decoded and
scored as documented."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from edgeserve.converter.tasks import load_metric, score_task

from edgeserve.errors import ConfigError


def _yolo(boxes: list[tuple[float, float, float, float, int, float]], classes: int) -> np.ndarray:
    """[1, 4+C, A] from (cx, cy, w, h, class, score) per anchor, padded with empty anchors
    (real heads have thousands; the layout is told by the longer axis)."""
    out = np.zeros((1, 4 + classes, len(boxes) + 16), np.float32)
    for a, (cx, cy, w, h, c, s) in enumerate(boxes):
        out[0, :4, a] = (cx, cy, w, h)
        out[0, 4 + c, a] = s
    return out


def test_detect_yolo_layout_nms_and_f1() -> None:
    ref = _yolo([(50, 50, 20, 20, 0, 0.9), (51, 50, 20, 20, 0, 0.8), (150, 80, 30, 10, 1, 0.7)], 2)
    assert score_task("detect", [ref], [ref]).score == 1.0  # the duplicate is suppressed by NMS
    moved = ref.copy()
    moved[0, 0, 2] += 40  # the class-1 box moves away: one miss and one false positive
    result = score_task("detect", [ref], [moved])
    assert result.details["boxes_original"] == 2 and result.details["boxes_matched"] == 1
    assert result.score == pytest.approx(0.5)
    faded = ref.copy()
    faded[0, 4:] = 0.1  # every score under 0.25: nothing detected
    assert score_task("detect", [ref], [faded]).score == 0.0


def test_detect_box_rows_layout() -> None:
    ref = np.array([[10, 10, 30, 30, 0.9, 1], [50, 50, 90, 90, 0.8, 2]], np.float32)
    shifted = ref.copy()
    shifted[1, :4] += 100
    assert score_task("detect", [ref], [ref]).score == 1.0
    assert score_task("detect", [ref], [shifted]).score == pytest.approx(0.5)


def test_segment_maps_in_both_layouts() -> None:
    a = np.zeros((2, 1, 4, 4), np.float32)
    a[:, :, :2] = 0.9
    b = a.copy()
    b[:, :, 1] = 0.1  # half the foreground lost
    assert score_task("segment", [a], [b]).score == pytest.approx(0.5)
    nhwc = np.moveaxis(a, 1, -1), np.moveaxis(b, 1, -1)
    assert score_task("segment", [nhwc[0]], [nhwc[1]]).score == pytest.approx(0.5)


def test_ctc_greedy_decode_collapses_repeats_and_blanks() -> None:
    def onehot(seq: list[int], classes: int = 4) -> np.ndarray:
        return np.eye(classes, dtype=np.float32)[seq]

    ref = np.stack([onehot([1, 1, 0, 1, 2]), onehot([3, 0, 3, 3, 0])])  # "1 1 2", "3 3"
    same = np.stack([onehot([1, 0, 1, 2, 2]), onehot([0, 3, 0, 3, 0])])  # decodes the same
    other = np.stack([onehot([1, 1, 1, 1, 2]), onehot([3, 0, 3, 3, 0])])  # "1 2" != "1 1 2"
    assert score_task("ctc", [ref], [same]).score == 1.0
    assert score_task("ctc", [ref], [other]).score == 0.5


def test_classify_embed_regress_and_shape_errors() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 10)).astype(np.float32)
    labels = x.argmax(axis=1)
    result = score_task("classify", [x], [x], labels)
    assert (
        result.metric == "accuracy"
        and result.score == 1.0
        and result.details["top5_agreement"] == 1.0
    )
    assert score_task("embed", [x], [2 * x]).score == pytest.approx(1.0)
    assert score_task("regress", [x], [x + 0.1 * x.std()]).score == pytest.approx(0.99, abs=0.005)
    with pytest.raises(ConfigError, match="no class axis"):
        score_task("classify", [x[:, :1]], [x[:, :1]])


def test_user_metric_is_imported_and_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_metric.py").write_text(
        "import numpy as np\n"
        "def close(reference, candidate, labels):\n"
        "    return float(np.mean(np.abs(reference[0] - candidate[0]) < 0.5))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    metric = load_metric("my_metric:close")
    a = np.zeros((4, 2), np.float32)
    b = a.copy()
    b[0] = 1.0
    result = score_task("", [a], [b], None, metric, "my_metric:close")
    assert result.reference == 1.0 and result.score == 0.75 and result.drop_points == 25.0
    with pytest.raises(ConfigError, match="no function"):
        load_metric("my_metric:nope")
    sys.modules.pop("my_metric", None)
