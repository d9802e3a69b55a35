"""Box suppression and merging: NMS for one model pass, GREEDYNMM across slices. Pure numpy."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]


def _areas(boxes: NDArray[np.floating]) -> NDArray[np.float64]:
    b = boxes.astype(np.float64)
    areas: NDArray[np.float64] = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(
        b[:, 3] - b[:, 1], 0, None
    )
    return areas


def _intersections(box: NDArray[np.floating], others: NDArray[np.floating]) -> NDArray[np.float64]:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter: NDArray[np.float64] = (np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)).astype(
        np.float64
    )
    return inter


def match(
    box: NDArray[np.floating], others: NDArray[np.floating], metric: Literal["ios", "iou"]
) -> NDArray[np.float64]:
    """Overlap of ``box`` with each of ``others``: IoU or intersection over the smaller area."""
    inter = _intersections(box, others)
    a = _areas(box[None, :])[0]
    b = _areas(others)
    denom = np.minimum(a, b) if metric == "ios" else a + b - inter
    ratio: NDArray[np.float64] = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
    return ratio


def nms(
    boxes: NDArray[np.floating], scores: NDArray[np.floating], iou_threshold: float
) -> IntArray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        if rest.size == 0:
            break
        overlap = match(boxes[best], boxes[rest], "iou")
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: NDArray[np.floating],
    scores: NDArray[np.floating],
    classes: NDArray[np.integer],
    iou_threshold: float,
) -> IntArray:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    b = boxes.astype(np.float64)
    span = float(b.max() - b.min()) + 1.0
    shifted = b + (np.asarray(classes, dtype=np.float64) * span * 2.0)[:, None]
    keep = nms(shifted, scores, iou_threshold)
    return keep[np.argsort(-np.asarray(scores)[keep], kind="stable")]


def greedy_nmm(
    boxes: NDArray[np.floating],
    scores: NDArray[np.floating],
    classes: NDArray[np.integer],
    *,
    threshold: float = 0.5,
    metric: Literal["ios", "iou"] = "ios",
    class_agnostic: bool = False,
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Greedy non-maximum *merging* (SAHI's GREEDYNMM).

    Best-scored box first: it absorbs every remaining box (of its class unless
    ``class_agnostic``) whose overlap with it is ≥ ``threshold``. The merged box is the union
    of its group, its score the group's best, its class the keeper's.
    """
    n = len(boxes)
    if n == 0:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    b = np.asarray(boxes, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(classes, dtype=np.int64)
    order = np.argsort(-s, kind="stable")
    consumed = np.zeros(n, dtype=bool)
    out_boxes: list[NDArray[np.float64]] = []
    out_scores: list[float] = []
    out_classes: list[int] = []
    for keeper in order:
        if consumed[keeper]:
            continue
        consumed[keeper] = True
        candidates = np.flatnonzero(~consumed)
        if not class_agnostic:
            candidates = candidates[c[candidates] == c[keeper]]
        group = [int(keeper)]
        if candidates.size:
            overlap = match(b[keeper], b[candidates], metric)
            absorbed = candidates[overlap >= threshold]
            consumed[absorbed] = True
            group.extend(int(i) for i in absorbed)
        members = b[group]
        out_boxes.append(
            np.array(
                [members[:, 0].min(), members[:, 1].min(), members[:, 2].max(), members[:, 3].max()]
            )
        )
        out_scores.append(float(s[group].max()))
        out_classes.append(int(c[keeper]))
    return (
        np.asarray(out_boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(out_scores, dtype=np.float32),
        np.asarray(out_classes, dtype=np.int64),
    )
