"""SAHI-style slicing: hand-checked boxes and a reference comparison."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.vision.tiling import axis_ranges, slice_boxes


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
