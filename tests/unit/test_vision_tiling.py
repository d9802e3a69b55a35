"""SAHI-style slicing: hand-checked boxes and a reference comparison."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.vision.merge import greedy_nmm
from pipeline.vision.tiling import (
    SliceCell,
    axis_ranges,
    slice_boxes,
    slice_grid,
    whole_elsewhere,
)


def sahi_reference(
    width: int, height: int, size: int, overlap: float
) -> list[tuple[int, int, int, int]]:
    """The slicing loop as SAHI describes it (nested while loops, shift the last slice)."""
    out: list[tuple[int, int, int, int]] = []
    ov = int(overlap * size)
    y_min = y_max = 0
    while y_max < height:
        x_min = x_max = 0
        y_max = y_min + size
        while x_max < width:
            x_max = x_min + size
            if y_max > height or x_max > width:
                xmax, ymax = min(width, x_max), min(height, y_max)
                out.append((max(0, xmax - size), max(0, ymax - size), xmax, ymax))
            else:
                out.append((x_min, y_min, x_max, y_max))
            x_min = x_max - ov
        y_min = y_max - ov
    return out


def test_1000x700_hand_checked() -> None:
    # step = 512 - int(0.25 * 512) = 384; x starts 0, 384, then 768 would end at 1280 > 1000
    # so it is shifted back to 1000 - 512 = 488. y: 0, then 384 → 896 > 700 → 700 - 512 = 188.
    assert slice_boxes(1000, 700, 512, 0.25) == [
        (0, 0, 512, 512),
        (384, 0, 896, 512),
        (488, 0, 1000, 512),
        (0, 188, 512, 700),
        (384, 188, 896, 700),
        (488, 188, 1000, 700),
    ]


def test_crop_smaller_than_a_slice_is_predicted_whole() -> None:
    assert slice_boxes(300, 200) == [(0, 0, 300, 200)]
    assert slice_boxes(512, 512) == [(0, 0, 512, 512)]
    assert slice_boxes(1, 1) == [(0, 0, 1, 1)]


def test_one_small_dimension_is_clamped() -> None:
    # width 600: 0..512, then 384 would end at 896 > 600 → 88..600; height 300 < 512.
    assert slice_boxes(600, 300) == [(0, 0, 512, 300), (88, 0, 600, 300)]
    assert slice_boxes(300, 600) == [(0, 0, 300, 512), (0, 88, 300, 600)]
    assert slice_boxes(513, 100) == [(0, 0, 512, 100), (1, 0, 513, 100)]


def test_exact_fit_is_not_shifted_and_not_duplicated() -> None:
    # 1280 = 768 + 512: the third slice ends exactly at the border.
    assert slice_boxes(1280, 512) == [(0, 0, 512, 512), (384, 0, 896, 512), (768, 0, 1280, 512)]
    assert slice_boxes(1024, 1024, 512, 0.0) == [
        (0, 0, 512, 512),
        (512, 0, 1024, 512),
        (0, 512, 512, 1024),
        (512, 512, 1024, 1024),
    ]


def test_axis_ranges() -> None:
    assert axis_ranges(1000, 512, 384) == [(0, 512), (384, 896), (488, 1000)]
    assert axis_ranges(400, 512, 384) == [(0, 400)]
    assert axis_ranges(512, 512, 384) == [(0, 512)]


@pytest.mark.parametrize(
    ("size", "overlap"), [(512, 0.25), (512, 0.0), (256, 0.5), (100, 0.2), (64, 0.33)]
)
def test_matches_sahi_loop_and_covers_everything(size: int, overlap: float) -> None:
    rng = np.random.default_rng(size)
    dims = [(size, size), (size + 1, size - 1), (3 * size, 2 * size + 7)]
    dims += [(int(w), int(h)) for w, h in rng.integers(1, 4 * size, size=(12, 2))]
    for width, height in dims:
        boxes = slice_boxes(width, height, size, overlap)
        if width <= size and height <= size:
            assert boxes == [(0, 0, width, height)]
        else:
            assert boxes == sahi_reference(width, height, size, overlap), (width, height)
        assert len(set(boxes)) == len(boxes)
        covered = np.zeros((height, width), dtype=bool)
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert x2 - x1 == min(size, width) and y2 - y1 == min(size, height)
            covered[y1:y2, x1:x2] = True
        assert covered.all()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        slice_boxes(0, 100)
    with pytest.raises(ValueError, match="overlap"):
        slice_boxes(100, 100, 64, 1.0)
    with pytest.raises(ValueError, match="slice_size"):
        slice_boxes(100, 100, 0)


def test_slice_grid_knows_its_neighbours() -> None:
    # 1000 × 700: x ranges (0,512) (384,896) (488,1000); y ranges (0,512) (188,700)
    cells = slice_grid(1000, 700, 512, 0.25)
    assert [c.box for c in cells] == slice_boxes(1000, 700, 512, 0.25)
    assert cells[0] == SliceCell((0, 0, 512, 512), None, 384, None, 188)
    assert cells[1] == SliceCell((384, 0, 896, 512), 512, 488, None, 188)
    assert cells[5] == SliceCell((488, 188, 1000, 700), 896, None, 512, None)
    assert slice_grid(300, 200) == [SliceCell((0, 0, 300, 200), None, None, None, None)]


def test_boxes_on_internal_edges_held_by_the_neighbour_are_fragments() -> None:
    left, right = slice_grid(896, 512, 512, 0.25)  # (0, 512) and (384, 896): overlap 128 px
    assert (left.next_x_start, right.prev_x_end) == (384, 512)
    boxes = np.array(
        [
            [450.0, 100, 512, 160],  # cut by the right edge, starts inside the overlap → drop
            [300.0, 200, 511, 260],  # touches the right edge, starts before 384 → keep
            [100.0, 100, 160, 160],  # away from any edge → keep
            [0.0, 300, 40, 340],  # on the region's own left border → keep
            [450.0, 470, 512, 512],  # bottom is the region border, right is internal → drop
        ]
    )
    np.testing.assert_array_equal(whole_elsewhere(boxes, left), [True, False, False, False, True])
    # in the right slice, a box cut by its left edge (384) that ends before 512 is held by
    # the left slice whole
    rb = np.array([[384.0, 10, 430, 60], [385.0, 10, 520, 60], [600.0, 10, 896, 60]])
    np.testing.assert_array_equal(whole_elsewhere(rb, right), [True, False, False])
    assert not whole_elsewhere(np.zeros((0, 4)), left).any()


def test_corner_fragments_need_both_neighbours() -> None:
    cells = slice_grid(896, 896, 512, 0.25)  # 2 × 2, starts 0 and 384 both ways
    top_left = cells[0]
    corner = np.array([[450.0, 450, 512, 512], [300.0, 450, 512, 512]])
    # first: inside the overlap both ways → the diagonal slice holds it whole; second: the
    # right neighbour cuts it too (starts at 300 < 384) → keep
    np.testing.assert_array_equal(whole_elsewhere(corner, top_left), [True, False])


def test_a_plant_cut_by_an_internal_slice_edge_is_one_detection() -> None:
    """A 70-px plant at x 470..540 in an 896-px-wide region: the left slice (0..512) sees a
    fragment, the right slice (384..896) sees it whole. The detector's fragment box is
    shifted down (the visible leaves), so GREEDYNMM by IoS 0.5 alone keeps both."""
    left, right = slice_grid(896, 512, 512, 0.25)
    fragment = np.array([[470.0, 130, 512, 190]])  # 42 × 60
    whole = np.array([[470.0, 100, 540, 165]])  # 70 × 65; IoS with fragment 35·42/2520 = .58
    nested = np.array([[476.0, 150, 512, 200]])  # another cut, IoS with the whole 0.42
    for frag, sahi_count in ((fragment, 1), (nested, 2)):
        boxes = np.concatenate([frag, whole])
        scores = np.array([0.6, 0.9])
        merged, _, _ = greedy_nmm(boxes, scores, np.zeros(2, np.int64), threshold=0.5)
        assert len(merged) == sahi_count  # what the plain merge gives
        keep_left = ~whole_elsewhere(frag, left)
        keep_right = ~whole_elsewhere(whole, right)
        kept = np.concatenate([frag[keep_left], whole[keep_right]])
        assert len(kept) == 1
        np.testing.assert_array_equal(kept[0], whole[0])
