"""NMS and GREEDYNMM, on cases worked out by hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.vision.merge import batched_nms, box_areas, greedy_nmm, match_metric, nms


def arr(rows: Sequence[Sequence[float]]) -> NDArray[np.float64]:
    return np.asarray(rows, dtype=np.float64)


def merged(
    boxes: Sequence[Sequence[float]], scores: list[float], classes: list[int], **kw: Any
) -> list[tuple[list[float], float, int]]:
    b, s, c = greedy_nmm(arr(boxes), np.asarray(scores), np.asarray(classes), **kw)
    return [(bb.tolist(), round(float(ss), 6), int(cc)) for bb, ss, cc in zip(b, s, c, strict=True)]


# ------------------------------------------------------------------------ metrics


def test_match_metric_by_hand() -> None:
    a = np.array([0, 0, 10, 10])
    others = arr([[5, 0, 15, 10], [2, 2, 4, 4], [20, 20, 30, 30], [0, 0, 10, 10]])
    # half-overlap: inter 50; iou 50/150; ios 50/100. Inside: inter 4; iou 4/100; ios 4/4.
    assert match_metric(a, others, "iou") == pytest.approx([1 / 3, 0.04, 0.0, 1.0])
    assert match_metric(a, others, "ios") == pytest.approx([0.5, 1.0, 0.0, 1.0])
    # a degenerate box never divides by zero
    assert match_metric(np.array([1, 1, 1, 5]), others, "ios").tolist() == [0, 0, 0, 0]
    assert box_areas(arr([[0, 0, 2, 3], [5, 5, 4, 4]])).tolist() == [6.0, 0.0]


# ----------------------------------------------------------------------- greedy nmm


def test_half_overlap_merges_at_ios_threshold_but_not_by_iou() -> None:
    boxes = [[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]]
    scores, classes = [0.9, 0.8, 0.7], [0, 0, 0]
    # IOS = 50 / 100 = 0.5 ≥ 0.5 → merged into the union, best score, keeper's class.
    assert merged(boxes, scores, classes) == [
        ([0, 0, 15, 10], 0.9, 0),
        ([100, 100, 110, 110], 0.7, 0),
    ]
    # IoU = 50 / 150 = 0.33 < 0.5 → nothing merges.
    assert merged(boxes, scores, classes, metric="iou") == [
        ([0, 0, 10, 10], 0.9, 0),
        ([5, 0, 15, 10], 0.8, 0),
        ([100, 100, 110, 110], 0.7, 0),
    ]
    # just above the IOS of the pair: no merge either
    assert len(merged(boxes, scores, classes, threshold=0.51)) == 3


def test_small_box_inside_big_one() -> None:
    boxes = [[0, 0, 100, 100], [10, 10, 20, 20]]
    # IOS = 100 / 100 = 1 → merged; the keeper is the better-scored small box, so the
    # class is its class and the box is the union (= the big box).
    assert merged(boxes, [0.6, 0.95], [3, 3]) == [([0, 0, 100, 100], 0.95, 3)]
    # IoU = 100 / 10000 → kept apart
    assert len(merged(boxes, [0.6, 0.95], [3, 3], metric="iou")) == 2


def test_class_aware_versus_agnostic() -> None:
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11]]
    scores, classes = [0.7, 0.9], [0, 1]
    # class-aware (default): different classes never merge
    assert merged(boxes, scores, classes) == [
        ([1, 1, 11, 11], 0.9, 1),
        ([0, 0, 10, 10], 0.7, 0),
    ]
    # agnostic: merged, keeper (score 0.9) gives its class 1
    assert merged(boxes, scores, classes, class_agnostic=True) == [([0, 0, 11, 11], 0.9, 1)]


def test_match_is_against_the_keeper_and_absorbed_boxes_are_gone() -> None:
    # A [0,10] 0.9, B [6,16] 0.8, C [3,13] 0.7 (all height 10).
    # IOS(A,B) = 40/100 = 0.4 → B not absorbed by A; IOS(A,C) = 70/100 → C absorbed by A.
    # B then keeps alone: C is already consumed even though IOS(B,C) = 0.7.
    boxes = [[0, 0, 10, 10], [6, 0, 16, 10], [3, 0, 13, 10]]
    assert merged(boxes, [0.9, 0.8, 0.7], [0, 0, 0]) == [
        ([0, 0, 13, 10], 0.9, 0),
        ([6, 0, 16, 10], 0.8, 0),
    ]


def test_keeper_absorbs_several_and_union_spans_them() -> None:
    boxes = [[10, 10, 20, 20], [8, 12, 18, 22], [12, 5, 22, 15], [15, 15, 40, 40]]
    # IOS with keeper [10,10,20,20]: second 8·8/100 = .64, third 8·5/100 = .4, fourth 25/100.
    out = merged(boxes, [0.9, 0.5, 0.6, 0.4], [0, 0, 0, 0], threshold=0.4)
    assert out == [([8, 5, 22, 22], 0.9, 0), ([15, 15, 40, 40], 0.4, 0)]


def test_ties_keep_input_order_and_dtypes_follow_input() -> None:
    boxes = np.asarray([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32)
    b, s, c = greedy_nmm(boxes, np.asarray([0.5, 0.5], np.float32), np.asarray([1, 2]))
    assert b.tolist() == [[0, 0, 10, 10], [50, 50, 60, 60]]
    assert b.dtype == np.float32 and s.dtype == np.float32 and c.dtype == np.int64
    assert c.tolist() == [1, 2]


def test_empty_input() -> None:
    b, s, c = greedy_nmm(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    assert b.shape == (0, 4) and s.shape == (0,) and c.shape == (0,)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="scores"):
        greedy_nmm(arr([[0, 0, 1, 1]]), np.asarray([0.5, 0.6]), np.asarray([0]))
    with pytest.raises(ValueError, match="metric"):
        greedy_nmm(arr([[0, 0, 1, 1]]), np.asarray([0.5]), np.asarray([0]), metric="x")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ nms


def test_nms_by_hand() -> None:
    boxes = arr([[1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    scores = np.asarray([0.8, 0.9, 0.7])
    # IoU of the first two = 90 / 110 = 0.818
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.9).tolist() == [1, 0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).dtype == np.int64


def test_batched_nms_keeps_overlaps_of_other_classes() -> None:
    boxes = arr([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]])
    scores = np.asarray([0.9, 0.8, 0.95])
    classes = np.asarray([0, 0, 1])
    # class 0: 0 suppresses 1; class 1: alone. Best score first.
    assert batched_nms(boxes, scores, classes, 0.5).tolist() == [2, 0]


def _nms_reference(boxes: NDArray[np.float64], scores: NDArray[np.float64], t: float) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        ok = True
        for k in keep:
            ix = max(0.0, min(boxes[i][2], boxes[k][2]) - max(boxes[i][0], boxes[k][0]))
            iy = max(0.0, min(boxes[i][3], boxes[k][3]) - max(boxes[i][1], boxes[k][1]))
            inter = ix * iy
            a = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
            b = (boxes[k][2] - boxes[k][0]) * (boxes[k][3] - boxes[k][1])
            if inter / (a + b - inter) > t:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def test_nms_matches_a_plain_reference() -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 200, size=(300, 2))
    wh = rng.uniform(5, 60, size=(300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(0, 1, size=300)
    for t in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, t).tolist() == _nms_reference(boxes, scores, t)
    classes = rng.integers(0, 3, size=300)
    expected: list[int] = []
    for cls in range(3):
        idx = np.flatnonzero(classes == cls)
        expected += [int(idx[i]) for i in _nms_reference(boxes[idx], scores[idx], 0.5)]
    expected.sort(key=lambda i: (-scores[i], i))
    assert batched_nms(boxes, scores, classes, 0.5).tolist() == expected


def test_groups_keep_boxes_of_one_slice_apart() -> None:
    # a small plant half under a large neighbour (IoS 1.0) in one slice, and the large one
    # found again by the overlapping slice
    boxes = [[0, 0, 40, 40], [10, 10, 30, 30], [1, 0, 41, 40]]
    scores = [0.9, 0.8, 0.7]
    # plain GREEDYNMM merges all three into one box
    assert len(merged(boxes, scores, [0, 0, 0])) == 1
    got = merged(boxes, scores, [0, 0, 0], groups=np.array([0, 0, 1]))
    # slice 0's two plants stay two; slice 1's copy of the large one is merged into it
    assert got == [([0.0, 0.0, 41.0, 40.0], 0.9, 0), ([10.0, 10.0, 30.0, 30.0], 0.8, 0)]
    with pytest.raises(ValueError, match="groups"):
        greedy_nmm(arr(boxes), np.asarray(scores), np.zeros(3), groups=np.zeros(2))


def test_large_boxes_merge_at_their_own_threshold() -> None:
    # two leaf-cluster boxes of one 150-px plant: IoS 0.6
    big = [[0, 0, 150, 150], [60, 0, 210, 150]]
    # a small plant half under a small neighbour: IoS 0.6 as well
    small = [[300, 0, 340, 40], [316, 0, 356, 40]]
    boxes, scores = big + small, [0.9, 0.8, 0.9, 0.8]
    plain = merged(boxes, scores, [0, 0, 0, 0], threshold=0.85)
    assert len(plain) == 4
    sized = merged(boxes, scores, [0, 0, 0, 0], threshold=0.85, large=(96.0, 0.5))
    # the large pair is one plant now, the small pair stays two
    assert [b for b, _, _ in sized] == [
        [0.0, 0.0, 210.0, 150.0],
        [300, 0, 340, 40],
        [316, 0, 356, 40],
    ]
