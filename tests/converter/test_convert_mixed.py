"""The mixed-precision search: which float sets it tries, in which order, and where it stops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from edgeserve.converter.mixed import MAX_TRIALS, float_sets, output_tail, search_mixed
from edgeserve.converter.quantize import Exclusions
from edgeserve.converter.sensitivity import NodeError, with_shared_scale
from onnx import TensorProto, helper, numpy_helper
from support.real_traps import paddle_like_segmenter, yolo_like_detector

# the generated detector's decoding: everything after the last Conv's feature map
YOLO_TAIL = {
    "box_reshape", "box_split", "xy_sigmoid", "xy_scale", "wh_sigmoid", "wh_scale",
    "box_concat", "cls_reshape", "cls_sigmoid", "head_concat",
}  # fmt: skip


@dataclass
class _Trial:
    """What the search reads and writes on a candidate."""

    excluded: tuple[str, ...]
    failure: str | None
    float_set: str = ""


def _ranking(names: list[str]) -> list[NodeError]:
    return [NodeError(n, "Op", 10.0 + i, 1.0) for i, n in enumerate(names)]


def test_the_output_tail_of_a_yolo_head_is_its_decoding(tmp_path: Path) -> None:
    model = onnx.load(str(yolo_like_detector(tmp_path / "y.onnx")))
    tail = output_tail(model)
    assert set(tail) == YOLO_TAIL
    assert not {"stem", "box_conv", "cls_conv"} & set(tail)  # the feature maps stay int8


def _segmenter(path: Path) -> Path:
    """x [N, 3, H, W] -> Conv, Relu, Conv, Sigmoid -> map [N, 1, H, W]: no decoding."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((1, 8, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["logit"], name="head"),
        helper.make_node("Sigmoid", ["logit"], ["prob"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def test_a_segmenter_whose_output_keeps_the_layout_has_no_tail(tmp_path: Path) -> None:
    model = onnx.load(str(_segmenter(tmp_path / "s.onnx")))
    assert output_tail(model) == []
    steps = float_sets(_ranking(["head", "conv1", "relu1"]), model)
    assert [label for label, _ in steps] == [
        "sensitivity top 1", "sensitivity top 2", "sensitivity top 3",
    ]  # fmt: skip


def test_a_tail_holding_much_of_the_model_is_not_tried(tmp_path: Path) -> None:
    """The Paddle flatten round trip before the head Conv: the tail holds 1 of 3 Convs."""
    model = onnx.load(str(paddle_like_segmenter(tmp_path / "p.onnx")))
    assert "head" in output_tail(model)
    labels = [label for label, _ in float_sets(_ranking(["head", "conv1"]), model)]
    assert labels == ["sensitivity top 1", "sensitivity top 2"]


def test_float_sets_try_the_tail_after_the_first_step_and_stay_bounded(tmp_path: Path) -> None:
    model = onnx.load(str(yolo_like_detector(tmp_path / "y.onnx")))
    ranking = _ranking([f"n{i}" for i in range(40)])
    steps = float_sets(ranking, model)
    labels = [label for label, _ in steps]
    assert labels == [
        "sensitivity top 1", "output tail (10 nodes)", "sensitivity top 2",
        "sensitivity top 4", "sensitivity top 8", "sensitivity top 16",
    ]  # fmt: skip
    assert len(steps) == MAX_TRIALS
    assert set(steps[1][1]) == YOLO_TAIL


def test_the_search_finds_a_spread_error_that_no_ranking_step_fixes(tmp_path: Path) -> None:
    """int8 error spread over the head: only a float set holding all of it passes. The ranking
    puts one head node first and backbone nodes after it, as on the real YOLOv8n."""
    model = onnx.load(str(yolo_like_detector(tmp_path / "y.onnx")))
    ranking = _ranking(["cls_sigmoid", "stem", "box_conv", "cls_conv"])
    calls: list[tuple[str, ...]] = []

    def trial(exclusions: Exclusions, where: Path) -> _Trial:
        calls.append(exclusions.node_globs)
        fixed = set(exclusions.node_globs) >= YOLO_TAIL
        return _Trial(exclusions.node_globs, None if fixed else "box_f1@0.5 0.46")

    tried = search_mixed(ranking, model, Exclusions(node_globs=("user_*",)), trial, tmp_path)
    assert [t.float_set for t in tried] == ["sensitivity top 1", "output tail (10 nodes)"]
    assert tried[-1].failure is None
    assert calls[-1][0] == "user_*"  # the user's own exclusions are kept
    assert set(calls[-1][1:]) == YOLO_TAIL
    # without the tail, every ranking step fails: the ranking never holds the whole head
    for label, names in float_sets(ranking, model):
        if label.startswith("sensitivity"):
            assert not set(with_shared_scale(model, names)) >= YOLO_TAIL, label
