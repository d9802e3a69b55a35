"""resolve_segments: one segment per container, pixels exclusive, on exact masks."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.vision.segments import MaskInstance, mask_overlap, resolve_segments


def _rect(x0: int, y0: int, w: int, h: int, score: float, cls: int) -> MaskInstance:
    return MaskInstance(score, cls, x0, y0, np.ones((h, w), dtype=bool))


def _canvas(seg_x0: int, seg_y0: int, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[seg_y0 : seg_y0 + mask.shape[0], seg_x0 : seg_x0 + mask.shape[1]] = mask
    return out


def test_overlap_metrics_hand_checked() -> None:
    a = (0, 0, np.ones((10, 10), bool))  # 100 px
    b = (5, 0, np.ones((10, 20), bool))  # 200 px, 50 in common
    assert mask_overlap(a, b, "ios") == pytest.approx(50 / 100)
    assert mask_overlap(a, b, "iou") == pytest.approx(50 / 250)
    assert mask_overlap(a, (30, 30, np.ones((4, 4), bool))) == 0.0
    assert mask_overlap(a, (0, 0, np.zeros((4, 4), bool))) == 0.0


def test_one_tray_found_twice_under_two_classes_is_one_segment() -> None:
    # "segmento" 0.41 over the whole tray, "plug" 0.32 over most of it, shifted
    tray = _rect(10, 20, 100, 60, 0.41, 1)
    dup = _rect(16, 24, 90, 58, 0.32, 3)
    out = resolve_segments([dup, tray], threshold=0.3)
    assert len(out) == 1
    seg = out[0]
    assert (seg.class_id, seg.score, seg.source, seg.merged) == (1, 0.41, 1, (1, 0))
    assert seg.changed
    # the union of both masks, cropped to its bounding box
    expected = _canvas(10, 20, tray.mask, (200, 200)) | _canvas(16, 24, dup.mask, (200, 200))
    got = _canvas(seg.x0, seg.y0, seg.mask, (200, 200))
    np.testing.assert_array_equal(got, expected)
    assert (seg.x0, seg.y0, seg.mask.shape) == (10, 20, (62, 100))


def test_touching_trays_stay_two_with_exclusive_pixels() -> None:
    left = _rect(0, 0, 100, 50, 0.5, 2)  # 5000 px
    right = _rect(90, 0, 100, 50, 0.8, 2)  # 10 columns in common: 500 px = 0.1 of either
    out = resolve_segments([left, right], threshold=0.3)
    assert [s.source for s in out] == [1, 0]  # best score first
    assert out[0].mask.shape == (50, 100) and not out[0].changed
    # the overlap went to the better-scored tray; the other one lost those columns
    assert (out[1].x0, out[1].y0, out[1].mask.shape, out[1].area_px) == (0, 0, (50, 90), 4500)
    a = _canvas(out[0].x0, out[0].y0, out[0].mask, (60, 200))
    b = _canvas(out[1].x0, out[1].y0, out[1].mask, (60, 200))
    assert not (a & b).any()
    assert (a | b).sum() == 5000 + 5000 - 500


def test_iou_metric_and_disabled_merging() -> None:
    big = _rect(0, 0, 100, 100, 0.9, 0)
    inside = _rect(10, 10, 40, 40, 0.5, 4)  # IoS 1.0, IoU 0.16
    assert len(resolve_segments([big, inside], threshold=0.3, metric="ios")) == 1
    # by IoU it is another container, but its pixels all belong to the better one → dropped
    assert len(resolve_segments([big, inside], threshold=0.3, metric="iou")) == 1
    kept = resolve_segments([big, inside], threshold=2.0)
    assert [s.source for s in kept] == [0]
    with pytest.raises(ValueError, match="metric"):
        resolve_segments([big], metric="dice")  # type: ignore[arg-type]


def test_small_leftovers_and_empty_masks_are_dropped() -> None:
    a = _rect(0, 0, 100, 100, 0.9, 0)
    sliver = _rect(95, 0, 10, 100, 0.4, 2)  # half inside a: IoS 0.5 → merged
    empty = MaskInstance(0.95, 1, 0, 0, np.zeros((5, 5), bool))
    out = resolve_segments([empty, a, sliver], threshold=0.6, min_area_px=600)
    # not merged (0.5 < 0.6), 500 px left after exclusivity < 600 → dropped
    assert [s.source for s in out] == [1]
    assert not out[0].changed


def test_disjoint_masks_are_returned_unchanged() -> None:
    m = np.zeros((20, 30), bool)
    m[5:15, 3:25] = True
    a = MaskInstance(0.7, 2, 100, 100, m)
    b = _rect(0, 0, 50, 50, 0.6, 3)
    out = resolve_segments([a, b])
    assert [s.source for s in out] == [0, 1]
    assert out[0].mask is not m and np.array_equal(out[0].mask, m)
    assert (out[0].x0, out[0].y0, out[0].changed) == (100, 100, False)
