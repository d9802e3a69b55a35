"""Weighing a region's alternative detection pass by detected + estimated plants."""

from __future__ import annotations

import numpy as np

from pipeline.inference.counting import estimate_regions, weigh_alternatives
from pipeline.inference.slicing import Region, RegionDetections
from pipeline.vision.bands import BandParams

SOIL = (120, 80, 50)
GREEN = (0, 200, 0)


def _found(boxes: list[list[float]]) -> RegionDetections:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return RegionDetections(b, np.full(len(b), 0.9, np.float32), np.zeros(len(b), np.int64))


def _photo() -> tuple[np.ndarray, Region]:
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[:] = SOIL
    rgb[40:80, 60:100] = GREEN  # 1600 px of vegetation in the crop
    return rgb, Region(0, 10, 10, np.ones((100, 140), bool))


def _weigh(alternative: RegionDetections) -> tuple[RegionDetections, int]:
    rgb, region = _photo()
    params = BandParams(bands=1, default_plant_area_px=400.0)
    per_region = [_found([])]
    estimated = estimate_regions(rgb, [region], per_region, [], params, fallback=False)
    first = estimated[0][0].estimated
    assert first == 5  # ceil(1600 / (400 × 0.9)) plants nobody detected
    weigh_alternatives(
        rgb, [region], per_region, {0: alternative}, estimated, [], params, fallback=False
    )
    return per_region[0], estimated[0][0].estimated


def test_an_alternative_that_counts_more_replaces_the_first_pass() -> None:
    quarters = [[60, 40, 80, 60], [80, 40, 100, 60], [60, 60, 80, 80], [80, 60, 100, 80]]
    six = _found([*quarters, [60, 40, 70, 50], [90, 70, 100, 80]])
    kept, estimated = _weigh(six)
    assert kept is six
    assert len(kept.boxes) + estimated > 5


def test_an_alternative_whose_boxes_only_cover_the_estimate_is_not_taken() -> None:
    one = _found([[60, 40, 100, 80]])  # one box over the whole patch: 1 + 0 < 0 + 5
    kept, estimated = _weigh(one)
    assert len(kept.boxes) == 0
    assert estimated == 5
