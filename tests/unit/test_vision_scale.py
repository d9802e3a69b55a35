"""Slice size from the measured plant size (pipeline.vision.scale)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.vision.scale import ScaleRule, choose_slice_size, longest_sides

RULE = ScaleRule()  # in range 26..80 px; targets 30 (small) and 60 (large); 8 detections


def test_longest_sides() -> None:
    boxes = np.array([[0, 0, 10, 30], [5, 5, 45, 15]], np.float32)
    assert longest_sides(boxes).tolist() == [30.0, 40.0]
    assert longest_sides(np.zeros((0, 4))).shape == (0,)


def test_plants_in_range_keep_the_slice() -> None:
    for side in (26.0, 40.0, 80.0):
        assert choose_slice_size(np.full(20, side), 512, 512, RULE) == 512


def test_large_plants_get_larger_slices_down_to_the_large_target() -> None:
    # 135-px plants in 512-px slices at a 512 input: slices 512·135/60 = 1152, plants 60 px
    assert choose_slice_size(np.full(20, 135.0), 512, 512, RULE) == 1152
    # the median decides: a few small fragments do not
    sides = np.array([135.0] * 15 + [20.0] * 5)
    assert choose_slice_size(sides, 512, 512, RULE) == 1152


def test_small_plants_get_smaller_slices_up_to_the_small_target() -> None:
    assert choose_slice_size(np.full(20, 20.0), 512, 512, RULE) == round(512 * 20 / 30)


def test_the_detector_input_side_counts() -> None:
    # 1024-px slices into a 512 input halve the plants: 100 px are seen as 50, in range
    assert choose_slice_size(np.full(20, 100.0), 1024, 512, RULE) == 1024
    # 200 px seen as 100: slices grow to bring them to 60
    assert choose_slice_size(np.full(20, 200.0), 1024, 512, RULE) == round(1024 * 100 / 60)


def test_factor_is_bounded() -> None:
    assert choose_slice_size(np.full(20, 1000.0), 512, 512, RULE) == 512 * 4
    assert choose_slice_size(np.full(20, 3.0), 512, 512, RULE) == 256


def test_too_few_measurements_say_nothing() -> None:
    assert choose_slice_size(np.full(7, 135.0), 512, 512, RULE) is None
    assert choose_slice_size(np.array([np.nan] * 10 + [135.0] * 7), 512, 512, RULE) is None
    assert choose_slice_size(np.full(8, 135.0), 512, 512, RULE) == 1152


@pytest.mark.parametrize("side", [10.0, 50.0, 150.0, 220.0])
def test_chosen_slice_brings_the_median_into_range(side: float) -> None:
    size = choose_slice_size(np.full(30, side), 512, 512, RULE)
    assert size is not None
    assert RULE.min_px <= side * 512 / size <= RULE.max_px or size in (256, 2048)
