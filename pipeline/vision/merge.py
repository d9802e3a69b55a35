"""Box suppression and merging, pure numpy.

* :func:`nms` / :func:`batched_nms` — greedy non-maximum suppression inside one model pass
  (the YOLO decoders use them);
* :func:`greedy_nmm` — SAHI's GREEDYNMM, which *merges* the detections of overlapping slices
  instead of dropping them.

Boxes are ``(N, 4)`` ``x1, y1, x2, y2`` in pixels; degenerate boxes have area 0.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["batched_nms", "box_areas", "greedy_nmm", "match_metric", "nms"]

MatchMetric = Literal["ios", "iou"]


def _as_boxes(boxes: NDArray[Any]) -> NDArray[np.float64]:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {b.shape}")
    return b


def _as_vector(values: NDArray[Any], n: int, name: str) -> NDArray[Any]:
    v = np.asarray(values).reshape(-1)
    if v.shape[0] != n:
        raise ValueError(f"{name} has {v.shape[0]} entries for {n} boxes")
    return v


def box_areas(boxes: NDArray[Any]) -> NDArray[np.float64]:
    """Area of each box (0 for inverted/degenerate boxes)."""
    b = _as_boxes(boxes)
    areas: NDArray[np.float64] = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(
        b[:, 3] - b[:, 1], 0.0
    )
    return areas


def match_metric(
    box: NDArray[Any], others: NDArray[Any], metric: MatchMetric = "iou"
) -> NDArray[np.float64]:
    """Overlap of one box with each of ``others``.

    ``"iou"``: intersection over union; ``"ios"``: intersection over the *smaller* of the two
    areas (1.0 when one box lies inside the other). A zero denominator gives 0.
    """
    if metric not in ("iou", "ios"):
        raise ValueError(f"metric must be 'iou' or 'ios', got {metric!r}")
    a = np.asarray(box, dtype=np.float64).reshape(4)
    o = _as_boxes(others)
    iw = np.maximum(np.minimum(a[2], o[:, 2]) - np.maximum(a[0], o[:, 0]), 0.0)
    ih = np.maximum(np.minimum(a[3], o[:, 3]) - np.maximum(a[1], o[:, 1]), 0.0)
    inter = iw * ih
    area_a = max(0.0, float(a[2] - a[0])) * max(0.0, float(a[3] - a[1]))
    area_o = box_areas(o)
    denom = np.minimum(area_a, area_o) if metric == "ios" else area_a + area_o - inter
    out: NDArray[np.float64] = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0.0)
    return out


def _score_order(scores: NDArray[Any]) -> NDArray[np.int64]:
    """Indices by descending score; ties keep input order (deterministic)."""
    order: NDArray[np.int64] = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order.astype(np.int64)


def nms(boxes: NDArray[Any], scores: NDArray[Any], iou_threshold: float) -> NDArray[np.int64]:
    """Greedy NMS: indices of the kept boxes, best score first.

    A box is suppressed when its IoU with an already kept, better-scored box is *greater*
    than ``iou_threshold`` (torchvision's rule). Each step compares the current best with
    all remaining boxes at once.
    """
    b = _as_boxes(boxes)
    n = b.shape[0]
    s = _as_vector(scores, n, "scores")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = _score_order(s)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        if rest.size == 0:
            break
        order = rest[match_metric(b[best], b[rest], "iou") <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: NDArray[Any], scores: NDArray[Any], classes: NDArray[Any], iou_threshold: float
) -> NDArray[np.int64]:
    """Class-aware NMS: boxes of different classes never suppress each other.

    Returns indices into the inputs, best score first (ties in input order).
    """
    b = _as_boxes(boxes)
    n = b.shape[0]
    s = np.asarray(_as_vector(scores, n, "scores"), dtype=np.float64)
    c = _as_vector(classes, n, "classes")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    kept: list[NDArray[np.int64]] = []
    for cls in np.unique(c):
        idx = np.flatnonzero(c == cls).astype(np.int64)
        kept.append(idx[nms(b[idx], s[idx], iou_threshold)])
    keep = np.concatenate(kept)
    result: NDArray[np.int64] = keep[np.lexsort((keep, -s[keep]))].astype(np.int64)
    return result


def greedy_nmm(
    boxes: NDArray[Any],
    scores: NDArray[Any],
    classes: NDArray[Any],
    *,
    threshold: float = 0.5,
    metric: MatchMetric = "ios",
    class_agnostic: bool = False,
    groups: NDArray[Any] | None = None,
    large: tuple[float, float] | None = None,
) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]], NDArray[np.int64]]:
    """Greedy non-maximum *merging* (SAHI's GREEDYNMM).

    Boxes are visited by descending score (ties in input order). Each box not yet absorbed
    becomes a keeper and absorbs every remaining, not yet absorbed box — of the same class
    unless ``class_agnostic`` — whose ``metric`` with the keeper's own box is
    ``>= threshold``. The group becomes one box: the union ``(min x1, min y1, max x2,
    max y2)``, the group's best score and the keeper's class. Output is in keeper order
    (best first); boxes and scores keep a floating dtype of the input (float32 stays
    float32), classes are int64.

    ``groups`` (one id per box, e.g. the slice it came from): a keeper never absorbs a box
    of its own group. Boxes of one slice already went through that slice's NMS, so two of
    them are two plants (a small one half under a large neighbour has IoS ≈ 1 with it);
    only the copies that other, overlapping slices found of the same plant are merged.

    ``large = (side_px, large_threshold)``: a pair whose boxes both have a longest side of at
    least ``side_px`` is merged at ``large_threshold`` instead (large plants come out of the
    detector as several leaf-cluster boxes that overlap each other less than nested plants
    of a dense bed do).
    """
    if metric not in ("iou", "ios"):
        raise ValueError(f"metric must be 'iou' or 'ios', got {metric!r}")
    b = _as_boxes(boxes)
    n = b.shape[0]
    s_in = _as_vector(scores, n, "scores")
    c = np.asarray(_as_vector(classes, n, "classes")).astype(np.int64)
    box_dtype = np.result_type(np.asarray(boxes).dtype, np.float32)
    score_dtype = np.result_type(s_in.dtype, np.float32)
    if n == 0:
        return (
            np.zeros((0, 4), dtype=box_dtype),
            np.zeros(0, dtype=score_dtype),
            np.zeros(0, dtype=np.int64),
        )
    s = s_in.astype(np.float64)
    g = None if groups is None else np.asarray(_as_vector(groups, n, "groups"))
    consumed = np.zeros(n, dtype=bool)
    # Candidates of a keeper are searched only among boxes whose x-range can meet its own
    # (sorted by x1, at most the widest box to the left): the same result as comparing with
    # every box, since a box that does not overlap has metric 0 < threshold.
    low = threshold if large is None else min(threshold, large[1])
    windowed = low > 0.0
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    by_x = np.argsort(b[:, 0], kind="stable")
    xs = b[by_x, 0]
    widest = float(np.max(b[:, 2] - b[:, 0])) if n else 0.0
    out_boxes = np.empty((n, 4), dtype=np.float64)
    out_scores = np.empty(n, dtype=np.float64)
    out_classes = np.empty(n, dtype=np.int64)
    m = 0
    for keeper in _score_order(s):
        if consumed[keeper]:
            continue
        consumed[keeper] = True
        if windowed:
            lo = int(np.searchsorted(xs, b[keeper, 0] - widest, side="left"))
            hi = int(np.searchsorted(xs, b[keeper, 2], side="right"))
            idx = np.sort(by_x[lo:hi])
        else:
            idx = np.arange(n)
        keep = ~consumed[idx]
        if not class_agnostic:
            keep &= c[idx] == c[keeper]
        if g is not None:
            keep &= g[idx] != g[keeper]
        idx = idx[keep]
        if idx.size:
            limit: NDArray[np.float64] | float = threshold
            if large is not None:
                both_large = np.minimum(side[idx], side[keeper]) >= large[0]
                limit = np.where(both_large, large[1], threshold)
            absorbed = idx[match_metric(b[keeper], b[idx], metric) >= limit]
            consumed[absorbed] = True
            group = np.concatenate(([keeper], absorbed))
        else:
            group = np.asarray([keeper])
        members = b[group]
        out_boxes[m] = (
            members[:, 0].min(),
            members[:, 1].min(),
            members[:, 2].max(),
            members[:, 3].max(),
        )
        out_scores[m] = s[group].max()
        out_classes[m] = c[keeper]
        m += 1
    return (
        out_boxes[:m].astype(box_dtype),
        out_scores[:m].astype(score_dtype),
        out_classes[:m],
    )
