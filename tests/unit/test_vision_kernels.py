"""The compiled / vectorised kernels of band estimation against their reference forms
(scipy's filters, the plain numpy code they replaced): the same pixels, the same shares."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.vision.bands import BandParams, thick_parts
from pipeline.vision.kernels import square_filter
from pipeline.vision.plant_colours import (
    LEVELS,
    ColourSamples,
    colour_index,
    discs,
    plant_pixels,
    support,
)


@pytest.mark.parametrize("dilate", [True, False])
def test_square_filter_is_scipys_maximum_and_minimum_filter(dilate: bool) -> None:
    rng = np.random.default_rng(3)
    reference = ndimage.maximum_filter if dilate else ndimage.minimum_filter
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, size=2))
        mask = rng.random((h, w)) < rng.uniform(0.1, 0.97)
        radius = int(rng.integers(0, 15))  # windows wider than the array included
        expected = reference(mask.view(np.uint8), size=2 * radius + 1).astype(bool)
        assert np.array_equal(square_filter(mask, radius, dilate=dilate), expected), (
            h,
            w,
            radius,
        )


def test_thick_parts_is_the_scipy_opening_grown_back() -> None:
    """The same pixels as the former scipy form (filters on the vegetation's bounding box)."""
    rng = np.random.default_rng(4)
    params = BandParams()
    r = max(1, round(params.thin_scale * np.sqrt(params.default_plant_area_px)))
    for _ in range(20):
        vegetation = np.zeros((160, 130), dtype=bool)
        y, x = (int(v) for v in rng.integers(0, 40, size=2))
        seeds = rng.random((100, 80)) < 0.01
        blobs = ndimage.binary_dilation(seeds, np.ones((3, 3), dtype=bool), iterations=8)
        vegetation[y : y + 100, x : x + 80] = blobs | (rng.random((100, 80)) < 0.05)
        ys, xs = np.nonzero(vegetation)
        top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        part = vegetation[top:bottom, left:right].view(np.uint8)
        opened = ndimage.minimum_filter(part, size=2 * r + 1)
        grown = ndimage.maximum_filter(opened, size=4 * r + 3).astype(bool)
        expected = np.zeros_like(vegetation)
        expected[top:bottom, left:right] = grown & vegetation[top:bottom, left:right]
        assert expected.any()
        assert np.array_equal(thick_parts(vegetation, params), expected)


def _discs_reference(shape: tuple[int, int], boxes: np.ndarray, scale: float) -> np.ndarray:
    """The numpy form of ``plant_colours.discs`` (one ``ogrid`` per box)."""
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        r = scale * ((x2 - x1) + (y2 - y1)) / 4.0
        ya, yb = max(0, int(cy - r)), min(h, int(np.ceil(cy + r)) + 1)
        xa, xb = max(0, int(cx - r)), min(w, int(np.ceil(cx + r)) + 1)
        if ya >= yb or xa >= xb:
            continue
        yy, xx = np.ogrid[ya:yb, xa:xb]
        out[ya:yb, xa:xb] |= (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
    return out


def _support_reference(
    index: np.ndarray, tables: list[np.ndarray], boxes: np.ndarray, scale: float
) -> np.ndarray:
    h, w = index.shape
    out = np.ones((len(tables), len(boxes)), dtype=np.float64)
    for i, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        x1, y1, x2, y2 = box
        ya, yb = max(0, int(y1)), min(h, int(np.ceil(y2)))
        xa, xb = max(0, int(x1)), min(w, int(np.ceil(x2)))
        if ya >= yb or xa >= xb:
            continue
        disc = _discs_reference((yb - ya, xb - xa), box.reshape(1, 4) - [xa, ya, xa, ya], scale)
        if disc.any():
            under = index[ya:yb, xa:xb][disc]
            for k, table in enumerate(tables):
                out[k, i] = float(table[under].mean())
    return out


def test_compiled_discs_and_support_give_the_numpy_forms_results() -> None:
    rng = np.random.default_rng(5)
    for trial in range(200):
        h, w = (int(v) for v in rng.integers(1, 100, size=2))
        n = int(rng.integers(0, 25))
        corner = rng.uniform(-20, max(h, w) + 20, size=(n, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(0, 40, size=(n, 2))], axis=1)
        if trial % 3 == 0:
            boxes = np.round(boxes)  # whole-pixel corners: pixel centres on a disc's edge
        scale = float(rng.choice([0.0, 0.6, 1.0, 1.5]))
        assert np.array_equal(discs((h, w), boxes, scale), _discs_reference((h, w), boxes, scale))
        index = rng.integers(0, LEVELS**3, size=(h, w)).astype(np.uint16)
        tables = [rng.random(LEVELS**3) < 0.5, rng.random(LEVELS**3) < 0.2]
        assert np.array_equal(
            support(index, tables, boxes, scale),
            _support_reference(index, tables, boxes, scale),
        )


def test_compiled_colour_index_and_plant_pixels_give_the_numpy_forms_results() -> None:
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, size=(37, 53, 3)).astype(np.uint8)
    q = (rgb >> 4).astype(np.uint16)
    expected = (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2]
    index = colour_index(rgb)
    assert index.dtype == np.uint16
    assert np.array_equal(index, expected)
    assert colour_index(np.zeros((0, 4, 3), dtype=np.uint8)).shape == (0, 4)
    plant, floor = rng.random(LEVELS**3) < 0.3, rng.random(LEVELS**3) < 0.4
    green = rng.random(index.shape) < 0.5
    assert np.array_equal(
        plant_pixels(index, plant, floor, green), plant[index] | (green & ~floor[index])
    )


def test_colour_samples_count_the_masked_pixels_bins() -> None:
    rng = np.random.default_rng(7)
    index = rng.integers(0, LEVELS**3, size=(41, 29)).astype(np.uint16)
    plant, floor = rng.random(index.shape) < 0.3, rng.random(index.shape) < 0.6
    samples = ColourSamples.of(index, plant, floor)
    for got, where in ((samples.plant, plant), (samples.floor, floor)):
        counts = np.bincount(index[where], minlength=LEVELS**3).astype(np.float64)
        cube = counts.reshape(LEVELS, LEVELS, LEVELS)
        expected = ndimage.uniform_filter(cube, size=3, mode="nearest") * 27.0
        assert np.array_equal(got, expected.reshape(-1))
    assert (samples.plant_px, samples.floor_px) == (plant.sum(), floor.sum())
