"""Task-level fidelity: score a converted model's outputs against the original's, per task.

Every task metric is a score in [0, 1] where the original against itself scores 1 (or, with
``--labels``, the original's own accuracy); the *drop* is the difference in points (x100).
Output conventions (the first output unless said otherwise; axis 0 = rows):

- ``classify``: scores ``[N, C]`` (or ``[N, ..., C]``, flattened). Top-1 agreement with the
  original, top-5 agreement (the original's top-1 within the converted top-5) and, with
  ``--labels``, top-1 accuracy of both; the score is the accuracy with labels, else top-1
  agreement.
- ``detect``: YOLO-style ``[N, 4+C, A]`` (cx, cy, w, h, then C class scores per anchor, as
  Ultralytics exports it; ``[N, A, 4+C]`` is recognised by its smaller last axis) or boxes
  ``[N, B, 6]`` / ``[B, 6]`` (x1, y1, x2, y2, score, class). Boxes over score 0.25 go through
  per-class NMS (IoU 0.45); the score is box F1 at IoU 0.5 against the original's boxes
  (same class), pooled over rows.
- ``segment``: a probability map ``[N, 1, H, W]`` / ``[N, H, W, 1]`` / ``[N, H, W]``
  thresholded at 0.5 (IoU of the foreground), or class scores ``[N, K, H, W]`` (K > 1,
  argmax; mean IoU over classes present); the score is IoU against the original's mask.
- ``ctc``: per-step scores ``[N, T, C]``, greedy-decoded (argmax, repeats collapsed, blank =
  index 0 dropped); the score is the fraction of rows whose decoded string equals the
  original's.
- ``embed``: vectors ``[N, D]`` (or flattened); the score is the mean per-row cosine.
- ``regress``: values of any shape; the score is R^2 of the converted against the original.
- ``--metric module:function``: ``function(reference, candidate, labels) -> float`` in [0, 1],
  higher is better, called with the original's outputs as reference (lists of arrays, one per
  output, in the model's order) and labels or None; the original against itself is the
  reference score.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from edgeserve.errors import ConfigError

__all__ = ["TASKS", "TaskScore", "load_metric", "score_task"]

TASKS: Final = ("classify", "detect", "segment", "ctc", "embed", "regress")
DETECT_SCORE_MIN: Final = 0.25  # Ultralytics' default predict confidence
DETECT_NMS_IOU: Final = 0.45
DETECT_MATCH_IOU: Final = 0.5
DETECT_MAX_BOXES: Final = 300  # per row, after NMS (Ultralytics' max_det)
SEGMENT_THRESHOLD: Final = 0.5
CTC_BLANK: Final = 0

Metric = Callable[[list[np.ndarray], list[np.ndarray], "np.ndarray | None"], float]


@dataclass
class TaskScore:
    """A task's figures for one candidate.

    Attributes:
        task: the task name (or ``metric:<module:function>``).
        metric: what the score is (``top1_agreement``, ``box_f1@0.5``, ...).
        reference: the original's score (1.0 unless labels say otherwise).
        score: the candidate's score.
        details: further figures (top-5, per-class, counts).
    """

    task: str
    metric: str
    reference: float
    score: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def drop_points(self) -> float:
        """Points lost against the reference (NaN when the score is not finite)."""
        if not np.isfinite(self.score):
            return float("nan")
        return round((self.reference - self.score) * 100.0, 4)

    def to_dict(self) -> dict[str, Any]:
        """The manifest form."""
        return {
            "task": self.task,
            "metric": self.metric,
            "reference": self.reference,
            "score": self.score,
            "drop_points": self.drop_points,
            **self.details,
        }


def load_metric(spec: str) -> Metric:
    """Import ``module:function`` (the module from ``sys.path``, e.g. the CWD).

    Raises:
        ConfigError: bad syntax, module or function not found.
    """
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"--metric {spec}: expected module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--metric {spec}: cannot import {module_name} ({exc})") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"--metric {spec}: {module_name} has no function {func_name}")
    return func  # type: ignore[no-any-return]


def score_task(
    task: str,
    original: Sequence[np.ndarray],
    converted: Sequence[np.ndarray],
    labels: np.ndarray | None = None,
    metric: Metric | None = None,
    metric_name: str = "",
) -> TaskScore:
    """Score ``converted`` against ``original`` for ``task`` (see the module docstring).

    Raises:
        ConfigError: the outputs do not follow the task's convention (named), or a user
            metric fails or returns something other than a number.
    """
    if metric is not None:
        return _user_metric(metric, metric_name, list(original), list(converted), labels)
    if task not in _SCORERS:
        raise ConfigError(f"unknown --task {task!r} (known: {', '.join(TASKS)})")
    a = np.asarray(original[0])
    b = np.asarray(converted[0])
    if a.shape != b.shape:
        raise ConfigError(f"--task {task}: output shapes differ ({a.shape} vs {b.shape})")
    return _SCORERS[task](a, b, labels)


def _user_metric(
    metric: Metric,
    name: str,
    original: list[np.ndarray],
    converted: list[np.ndarray],
    labels: np.ndarray | None,
) -> TaskScore:
    def call(candidate: list[np.ndarray]) -> float:
        try:
            params = inspect.signature(metric).parameters
            value = (
                metric(original, candidate, labels)
                if len(params) >= 3
                else metric(original, candidate)
            )  # type: ignore[call-arg]
            return float(value)
        except Exception as exc:
            raise ConfigError(f"--metric {name} failed: {type(exc).__name__}: {exc}") from exc

    return TaskScore(f"metric:{name}", name, call(original), call(converted))


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1).astype(np.float64)


def _classify(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None) -> TaskScore:
    if a.ndim < 2 or a.shape[-1] < 2:
        raise ConfigError(f"--task classify: output shape {list(a.shape)} has no class axis")
    fa, fb = _rows(a), _rows(b)
    top_a, top_b = fa.argmax(axis=1), fb.argmax(axis=1)
    k = min(5, fb.shape[1])
    top5_b = np.argsort(-fb, axis=1)[:, :k]
    details: dict[str, Any] = {
        "top1_agreement": float(np.mean(top_a == top_b)),
        "top5_agreement": float(np.mean((top5_b == top_a[:, None]).any(axis=1))),
    }
    if labels is not None:
        acc_a, acc_b = float(np.mean(top_a == labels)), float(np.mean(top_b == labels))
        details.update(accuracy_original=acc_a, accuracy_converted=acc_b)
        return TaskScore("classify", "accuracy", acc_a, acc_b, details)
    return TaskScore("classify", "top1_agreement", 1.0, details["top1_agreement"], details)


def _boxes_per_row(out: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Decode one output into per-row (boxes xyxy [K, 4], scores [K], classes [K])."""
    if out.ndim == 2 and out.shape[-1] == 6:
        out = out[None]
    if out.ndim != 3:
        raise ConfigError(
            f"--task detect: output shape {list(out.shape)} is neither [N, 4+C, A] nor [N, B, 6]"
        )
    rows = []
    for row in out.astype(np.float64):
        if row.shape[-1] == 6 and row.shape[0] != 6:
            boxes, scores, classes = row[:, :4], row[:, 4], row[:, 5].astype(np.int64)
        else:
            if row.shape[0] > row.shape[1]:  # [A, 4+C]
                row = row.T
            if row.shape[0] < 5:
                raise ConfigError(
                    f"--task detect: output shape {list(out.shape)} has fewer than 4+1 channels"
                )
            cx, cy, w, h = row[:4]
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
            cls_scores = row[4:]
            classes = cls_scores.argmax(axis=0)
            scores = cls_scores.max(axis=0)
        keep = np.isfinite(scores) & (scores > DETECT_SCORE_MIN)
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        rows.append(_nms(boxes, scores, classes))
    return rows


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-scores)
    kept: list[int] = []
    while order.size and len(kept) < DETECT_MAX_BOXES:
        i = int(order[0])
        kept.append(i)
        rest = order[1:]
        same = classes[rest] == classes[i]
        overlap = _iou(boxes[i], boxes[rest]) > DETECT_NMS_IOU
        order = rest[~(same & overlap)]
    idx = np.asarray(kept, dtype=np.int64)
    return boxes[idx], scores[idx], classes[idx]


def _detect(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None) -> TaskScore:
    tp = fp = fn = 0
    for (ba, _, ca), (bb, sb, cb) in zip(_boxes_per_row(a), _boxes_per_row(b), strict=True):
        matched = np.zeros(len(ba), dtype=bool)
        for j in np.argsort(-sb):
            candidates = np.flatnonzero(~matched & (ca == cb[j]))
            if candidates.size:
                ious = _iou(bb[j], ba[candidates])
                best = int(np.argmax(ious))
                if ious[best] >= DETECT_MATCH_IOU:
                    matched[candidates[best]] = True
                    tp += 1
                    continue
            fp += 1
        fn += int((~matched).sum())
    f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    details = {"boxes_original": tp + fn, "boxes_converted": tp + fp, "boxes_matched": tp}
    return TaskScore("detect", "box_f1@0.5", 1.0, f1, details)


def _segment(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None) -> TaskScore:
    if a.ndim == 4 and a.shape[-1] == 1 and a.shape[1] > 1:  # NHWC map (TFLite): [N, H, W, 1]
        a, b = a[..., 0], b[..., 0]
    if a.ndim == 4 and a.shape[1] > 1:
        ma, mb = a.argmax(axis=1), b.argmax(axis=1)
        ious = []
        for k in np.unique(ma):
            inter = np.sum((ma == k) & (mb == k))
            union = np.sum((ma == k) | (mb == k))
            ious.append(inter / union if union else 1.0)
        return TaskScore("segment", "mean_iou", 1.0, float(np.mean(ious)), {"classes": len(ious)})
    ma = a > SEGMENT_THRESHOLD
    mb = np.nan_to_num(b, nan=0.0) > SEGMENT_THRESHOLD
    union = int(np.sum(ma | mb))
    iou = float(np.sum(ma & mb) / union) if union else 1.0
    return TaskScore("segment", f"iou@{SEGMENT_THRESHOLD}", 1.0, iou, {"pixels": int(ma.sum())})


def _ctc_decode(scores: np.ndarray) -> list[tuple[int, ...]]:
    out = []
    for row in np.nan_to_num(scores, nan=-np.inf).argmax(axis=-1):
        collapsed = [int(c) for i, c in enumerate(row) if i == 0 or c != row[i - 1]]
        out.append(tuple(c for c in collapsed if c != CTC_BLANK))
    return out


def _ctc(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None) -> TaskScore:
    if a.ndim != 3:
        raise ConfigError(f"--task ctc: output shape {list(a.shape)} is not [N, T, C]")
    da, db = _ctc_decode(a), _ctc_decode(b)
    same = float(np.mean([x == y for x, y in zip(da, db, strict=True)]))
    return TaskScore("ctc", "exact_string_agreement", 1.0, same, {"strings": len(da)})


def _embed(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None) -> TaskScore:
    fa, fb = _rows(a), _rows(b)
    denom = np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1)
    cos = np.where(denom > 0, np.sum(fa * fb, axis=1) / np.where(denom > 0, denom, 1), 1.0)
    return TaskScore("embed", "mean_cosine", 1.0, float(np.mean(cos)))


def _regress(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None) -> TaskScore:
    fa, fb = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    sse = float(np.sum((fa - fb) ** 2))
    sst = float(np.sum((fa - fa.mean()) ** 2))
    r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0)
    return TaskScore("regress", "r2", 1.0, r2, {"rmse": float(np.sqrt(sse / max(fa.size, 1)))})


_SCORERS: Final[dict[str, Callable[[np.ndarray, np.ndarray, Any], TaskScore]]] = {
    "classify": _classify,
    "detect": _detect,
    "segment": _segment,
    "ctc": _ctc,
    "embed": _embed,
    "regress": _regress,
}
