"""Band estimation on synthetic segments with exactly known areas (segment-local pixels)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.vision.bands import (
    BandParams,
    band_rows,
    calibrated_plant_area,
    counted_vegetation,
    detection_mask,
    estimate_segment,
)
from pipeline.vision.vegetation import (
    floor_mask,
    otsu_threshold,
    rgb_to_hsv,
    rgb_to_lab,
    vegetation_mask,
)

GREEN = (0, 200, 0)
LEAF = (80, 150, 50)
DARK_GREEN = (30, 90, 30)
SOIL = (120, 80, 50)
SUBSTRATE = (30, 28, 25)
BENCH = (128, 128, 128)
LIGHT_BENCH = (170, 170, 170)
OLIVE_FILM = (90, 100, 70)

SHARP = BandParams(blur_sigma=0.0)  # no blur: circle areas are exact pixel counts


def solid(h: int, w: int, colour: tuple[int, int, int]) -> NDArray[np.uint8]:
    out = np.empty((h, w, 3), dtype=np.uint8)
    out[:] = colour
    return out


def circle_pixels(
    h: int, w: int, box: tuple[float, float, float, float], scale: float = 0.5
) -> NDArray[np.bool_]:
    """Independent brute-force disc: pixel centres within scale·mean(w, h) of the centre."""
    x1, y1, x2, y2 = box
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, scale * ((x2 - x1) + (y2 - y1)) / 2
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            out[y, x] = (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r
    return out


# ------------------------------------------------------------------- building blocks


def test_band_rows_tile_the_crop() -> None:
    assert band_rows(200, 4) == [(0, 50), (50, 100), (100, 150), (150, 200)]
    assert band_rows(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert band_rows(3, 1) == [(0, 3)]


def test_detection_mask_is_a_disc_of_circle_scale_times_mean_side() -> None:
    box = (40.0, 10.0, 80.0, 40.0)  # w 40, h 30 → r = 0.5 · 35 = 17.5, centre (60, 25)
    sharp = detection_mask((60, 120), np.asarray([box]), SHARP)
    expected = circle_pixels(60, 120, box)
    assert np.array_equal(sharp, expected)
    assert sharp.sum() == pytest.approx(math.pi * 17.5**2, rel=0.02)
    bigger = detection_mask(
        (60, 120), np.asarray([box]), BandParams(blur_sigma=0, circle_scale=0.6)
    )
    assert bigger.sum() == pytest.approx(math.pi * 21.0**2, rel=0.02)
    # blurred + thresholded at 0.5: nearly the same disc
    blurred = detection_mask((60, 120), np.asarray([box]), BandParams())
    assert np.count_nonzero(blurred ^ expected) < 0.05 * expected.sum()
    assert not detection_mask((60, 120), np.zeros((0, 4)), BandParams()).any()


def test_blur_fuses_circles_that_almost_touch() -> None:
    boxes = np.asarray([[0, 0, 20, 20], [21, 0, 41, 20]], dtype=float)  # gap of 1 px
    sharp = detection_mask((20, 41), boxes, SHARP)
    fused = detection_mask((20, 41), boxes, BandParams(blur_sigma=2.0))
    assert not sharp[10, 20] and fused[10, 20]


def test_otsu_separates_two_modes() -> None:
    values = np.concatenate([np.full(300, 20.0), np.full(700, 80.0)])
    t = otsu_threshold(values)
    assert 20 < t <= 80
    assert (values < t).sum() == 300
    assert otsu_threshold(np.full(10, 5.0)) == 5.0


def test_lab_and_hsv_reference_values() -> None:
    px = np.asarray([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0]]], dtype=np.uint8)
    lab = rgb_to_lab(px)[0]
    assert lab[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
    assert lab[1] == pytest.approx([0.0, 0.0, 0.0], abs=0.05)
    assert lab[2] == pytest.approx([53.24, 80.09, 67.20], abs=0.1)
    assert lab[3] == pytest.approx([87.73, -86.18, 83.18], abs=0.1)
    hue, sat, val = rgb_to_hsv(np.asarray([[[120, 80, 50], [0, 200, 0]]], dtype=np.uint8))
    assert hue[0].tolist() == pytest.approx([25.714, 120.0], abs=1e-3)
    assert sat[0].tolist() == pytest.approx([70 / 120, 1.0], abs=1e-6)
    assert val[0].tolist() == pytest.approx([120 / 255, 200 / 255], abs=1e-6)


# ---------------------------------------------------------------- floor suppression


@pytest.mark.parametrize("floor", [SOIL, SUBSTRATE, BENCH, LIGHT_BENCH])
@pytest.mark.parametrize("plant", [GREEN, LEAF, DARK_GREEN])
def test_plants_on_any_floor_are_vegetation_and_the_floor_is_not(
    floor: tuple[int, int, int], plant: tuple[int, int, int]
) -> None:
    crop = solid(60, 80, floor)
    crop[10:40, 20:50] = plant  # 30 × 30 plant
    crop[45:50, 60:65] = plant  # 5 × 5 plant
    veg = vegetation_mask(crop)
    expected = np.zeros((60, 80), dtype=bool)
    expected[10:40, 20:50] = True
    expected[45:50, 60:65] = True
    assert np.array_equal(veg, expected)
    assert np.array_equal(floor_mask(crop), ~expected)


def test_opening_removes_specks_and_thin_lines() -> None:
    crop = solid(40, 40, SOIL)
    crop[5, 5] = GREEN  # one pixel
    crop[10:12, 0:40] = GREEN  # two-pixel line
    crop[20:30, 20:30] = GREEN  # real plant
    veg = vegetation_mask(crop)
    assert veg.sum() == 100 and veg[20:30, 20:30].all()


def test_dull_green_in_the_dark_otsu_class_is_floor() -> None:
    # Bright foliage and a dull olive film (algae/moss on wet substrate): Otsu on L* puts the
    # film in the dark class, where only strongly green pixels count as vegetation.
    crop = solid(40, 80, GREEN)
    crop[:, 40:] = OLIVE_FILM
    veg = vegetation_mask(crop)
    assert veg[:, :40].all() and not veg[:, 40:].any()
    # Alone (no bimodal lightness), the same olive is not split off by Otsu.
    assert vegetation_mask(solid(20, 20, OLIVE_FILM)).all()


def test_dark_foliage_darker_than_the_bench_survives_otsu() -> None:
    crop = solid(40, 80, LIGHT_BENCH)
    crop[:, :40] = DARK_GREEN  # dark class of the split, but strongly green
    veg = vegetation_mask(crop)
    assert veg[:, :40].all() and not veg[:, 40:].any()


# -------------------------------------------------------------------- estimation


def test_pure_green_segment_exact_counts() -> None:
    # 400 wide × 200 high segment, all foliage; 4 bands of 50 rows (20 000 px each).
    h, w = 200, 400
    crop = solid(h, w, GREEN)
    seg = np.ones((h, w), dtype=bool)
    box0 = (40.0, 10.0, 80.0, 40.0)  # centre row 25 → band 0; disc r 17.5 within rows 7..43
    box2 = (200.0, 110.0, 260.0, 140.0)  # centre row 125 → band 2; disc r 22.5, rows 102..148
    est = estimate_segment(crop, seg, np.asarray([box0, box2]), 3, SHARP)
    disc0 = int(circle_pixels(h, w, box0).sum())
    disc2 = int(circle_pixels(h, w, box2).sum())
    assert disc0 == pytest.approx(math.pi * 17.5**2, rel=0.02)
    assert est.segment_index == 3
    assert [(b.band, b.y0, b.y1) for b in est.bands] == [
        (0, 0, 50),
        (1, 50, 100),
        (2, 100, 150),
        (3, 150, 200),
    ]
    assert [b.detections for b in est.bands] == [1, 0, 1, 0]
    assert [b.residual_px for b in est.bands] == [20000 - disc0, 20000, 20000 - disc2, 20000]
    assert [b.vegetation_px for b in est.bands] == [b.residual_px for b in est.bands]
    assert all(b.floor_suppressed_px == 0 and b.fringe_px == 0 for b in est.bands)
    assert all(b.plant_area_px == 2500.0 and not b.calibrated for b in est.bands)
    # ceil(px / (2500 · 0.9 = 2250)): 20000 → 8.9 → 9
    expected = [math.ceil((20000 - disc0) / 2250), 9, math.ceil((20000 - disc2) / 2250), 9]
    assert [b.estimated for b in est.bands] == expected == [9, 9, 9, 9]
    assert est.estimated == 36


def test_only_the_segment_mask_counts() -> None:
    h, w = 200, 400
    seg = np.zeros((h, w), dtype=bool)
    seg[:, :200] = True  # left half is the segment, the rest of the bbox crop is not
    est = estimate_segment(solid(h, w, GREEN), seg, np.zeros((0, 4)), 0, SHARP)
    assert [b.residual_px for b in est.bands] == [10000] * 4
    # 10000 / 2250 = 4.44 → 5 per band
    assert [b.estimated for b in est.bands] == [5] * 4


def test_soil_band_estimates_zero() -> None:
    h, w = 200, 400
    crop = solid(h, w, GREEN)
    crop[0:50] = SOIL
    crop[150:200] = SUBSTRATE
    est = estimate_segment(crop, np.ones((h, w), dtype=bool), np.zeros((0, 4)), 0, SHARP)
    b0, b1, b2, b3 = est.bands
    assert (b0.residual_px, b0.floor_suppressed_px, b0.vegetation_px, b0.estimated) == (
        20000,
        20000,
        0,
        0,
    )
    assert (b3.floor_suppressed_px, b3.vegetation_px, b3.estimated) == (20000, 0, 0)
    assert (b1.vegetation_px, b1.floor_suppressed_px, b1.estimated) == (20000, 0, 9)
    assert b2.vegetation_px == 20000
    assert est.estimated == 18


def test_plants_on_soil_exact_vegetation() -> None:
    # 6 undetected 30×30 plants (900 px each) on soil in band 0, one detected plant in band 1.
    h, w = 200, 400
    crop = solid(h, w, SOIL)
    for i in range(6):
        crop[10:40, 10 + 60 * i : 40 + 60 * i] = LEAF
    crop[60:90, 100:130] = LEAF
    det = np.asarray([[100, 60, 130, 90]], dtype=float)
    est = estimate_segment(crop, np.ones((h, w), dtype=bool), det, 0, BandParams())
    b0, b1 = est.bands[0], est.bands[1]
    assert b0.vegetation_px == 5400 and b0.fringe_px == 0
    assert b0.floor_suppressed_px == 20000 - 5400
    assert b0.estimated == 3  # 5400 / 2250 = 2.4
    # the detected plant's corners outside its circle are fringe, not a new plant
    assert b1.detections == 1 and b1.vegetation_px == 0 and b1.estimated == 0
    assert 0 < b1.fringe_px < 900 - math.pi * 15**2 + 20
    for b in est.bands:
        assert b.residual_px == b.floor_suppressed_px + b.fringe_px + b.vegetation_px


def test_fringe_filter_can_be_disabled() -> None:
    crop = solid(100, 100, SOIL)
    crop[20:60, 20:60] = GREEN  # a 40×40 plant, detected by its exact box
    det = np.asarray([[20, 20, 60, 60]], dtype=float)
    seg = np.ones((100, 100), dtype=bool)
    kept = estimate_segment(crop, seg, det, 0, BandParams(bands=1, blur_sigma=0))
    assert kept.estimated == 0
    corners = 1600 - int(circle_pixels(100, 100, (20, 20, 60, 60)).sum())
    assert kept.bands[0].fringe_px == corners
    raw = estimate_segment(
        crop,
        seg,
        det,
        0,
        BandParams(bands=1, blur_sigma=0, min_component_fraction=0, thin_scale=0),
    )
    assert raw.bands[0].vegetation_px == corners and raw.bands[0].estimated == 1


def test_rings_and_lattices_are_not_plants_compact_blobs_are() -> None:
    """A green pot's rim (a 6-px ring) and a green tray's walls (a lattice of 5-px lines) are
    thin structures, not undetected plants; a 30×30 plant and a 29-px disc keep their whole
    area (50-px plants: thin_scale 0.12 → r 6, structures under 13 px go)."""
    h, w = 200, 400
    crop = solid(h, w, SOIL)
    yy, xx = np.mgrid[0:h, 0:w]
    ring = np.abs(np.hypot(xx - 60, yy - 60) - 40) < 3
    crop[ring] = LEAF
    for x in range(200, 400, 40):
        crop[100:200, x : x + 5] = LEAF
    for y in range(100, 200, 40):
        crop[y : y + 5, 200:400] = LEAF
    crop[20:50, 250:280] = LEAF  # an undetected plant
    disc = np.hypot(xx - 150, yy - 160) <= 14
    crop[disc] = LEAF
    params = BandParams(bands=1, blur_sigma=0, default_plant_area_px=2500.0)
    est = estimate_segment(crop, np.ones((h, w), bool), np.zeros((0, 4)), 0, params)
    (band,) = est.bands
    compact = 900 + int(disc.sum())  # a disc loses at most its outermost tip pixels
    assert compact - 10 <= band.vegetation_px <= compact
    lattice = int(np.count_nonzero((crop[100:, 200:] == LEAF).all(-1)))
    assert band.fringe_px >= int(ring.sum()) + lattice
    off = estimate_segment(
        crop, np.ones((h, w), bool), np.zeros((0, 4)), 0, dataclasses.replace(params, thin_scale=0)
    )
    assert off.bands[0].vegetation_px > band.vegetation_px + 2000


def test_exact_multiples_do_not_round_up() -> None:
    crop = solid(100, 90, SOIL)
    crop[0:50, 0:90] = GREEN  # 4500 px = 2 × 2250 exactly
    one_band = BandParams(bands=1, blur_sigma=0.0)
    est = estimate_segment(crop, np.ones((100, 90), bool), np.zeros((0, 4)), 0, one_band)
    assert est.bands[0].vegetation_px == 4500
    assert est.estimated == 2


def _calibration_boxes() -> NDArray[np.float64]:
    # areas 1200, 1400, 1600, 1800, 2000 twice (w 30..50 × h 40), plus two outliers:
    # 200×100 = 20000 and 10×5 = 50. All centred on row 60 (band 0 of a 400-row crop).
    rows: list[list[float]] = []
    x = 220.0
    for width in (30, 35, 40, 45, 50) * 2:
        rows.append([x, 40.0, x + width, 80.0])
        x += 45.0
    rows.append([0.0, 10.0, 200.0, 110.0])
    rows.append([680.0, 57.5, 690.0, 62.5])
    return np.asarray(rows)


def test_calibration_with_iqr_outliers_removed() -> None:
    boxes = _calibration_boxes()
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # sorted: 50, 1200, 1200, 1400, 1400, 1600, 1600, 1800, 1800, 2000, 2000, 20000
    # Q1 = 1200 + .75·200 = 1350, Q3 = 1800 + .25·200 = 1850, IQR 500 → keep [600, 2600]
    true_areas = np.asarray([1200, 1400, 1600, 1800, 2000] * 2 + [20000, 50], dtype=float)
    assert sorted(areas.tolist()) == sorted(true_areas.tolist())
    assert calibrated_plant_area(true_areas, BandParams()) == (1600.0, True)
    assert calibrated_plant_area(true_areas[:9], BandParams()) == (2500.0, False)
    assert calibrated_plant_area(true_areas[:9], BandParams(min_calibration_detections=9))[1]

    h, w = 400, 800
    crop = solid(h, w, SOIL)
    crop[130:190, 700:760] = GREEN  # 3600 px undetected, band 0 (rows 0..199)
    crop[300:360, 700:760] = GREEN  # 3600 px undetected, band 1, no detections there
    est = estimate_segment(
        crop, np.ones((h, w), bool), _calibration_boxes(), 0, BandParams(bands=2)
    )
    b0, b1 = est.bands
    assert b0.detections == 12 and b0.calibrated and b0.plant_area_px == 1600.0
    assert b0.vegetation_px == 3600
    assert b0.estimated == 3  # 3600 / (1600 · 0.9 = 1440) = 2.5 → 3
    assert b1.detections == 0 and not b1.calibrated and b1.plant_area_px == 2500.0
    assert b1.vegetation_px == 3600 and b1.estimated == 2  # 3600 / 2250 = 1.6 → 2
    assert est.estimated == 5


def test_detection_centres_choose_the_band() -> None:
    def box(cy: float) -> list[float]:
        return [10.0, cy - 2.0, 14.0, cy + 2.0]

    boxes = np.asarray([box(49.9), box(50.0), box(199.0), box(-3.0), box(260.0)])
    est = estimate_segment(solid(200, 40, SOIL), np.ones((200, 40), bool), boxes, 0, SHARP)
    assert [b.detections for b in est.bands] == [2, 1, 0, 2]


def test_counted_vegetation_matches_band_counts() -> None:
    h, w = 200, 400
    crop = solid(h, w, SOIL)
    crop[20:170, 30:90] = LEAF
    det = np.asarray([[30, 20, 90, 80]], dtype=float)
    seg = np.ones((h, w), bool)
    est = estimate_segment(crop, seg, det, 0, BandParams())
    mask = counted_vegetation(crop, seg, det, BandParams())
    assert mask.shape == (h, w) and mask.sum() > 0
    for b in est.bands:
        assert int(mask[b.y0 : b.y1].sum()) == b.vegetation_px


def test_inputs_must_share_the_crop_shape() -> None:
    with pytest.raises(ValueError, match="segment-local"):
        estimate_segment(
            solid(100, 100, GREEN), np.ones((50, 50), bool), np.zeros((0, 4)), 0, SHARP
        )
    with pytest.raises(ValueError, match="bands"):
        BandParams(bands=0)


def test_uint8_segment_mask_and_empty_crop() -> None:
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[:20] = 255
    est = estimate_segment(solid(40, 40, GREEN), mask, np.zeros((0, 4)), 1, SHARP)
    assert sum(b.residual_px for b in est.bands) == 800
    empty = estimate_segment(
        np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), bool), np.zeros((0, 4)), 2, SHARP
    )
    assert empty.estimated == 0 and len(empty.bands) == 4
