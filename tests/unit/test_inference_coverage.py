"""Slices that follow the containers as they lie, slices over every uncovered part of the
photo at any slice size, and scale per zone of a region (pure logic, no model)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.inference.coverage import CELL, Coverage, _coarse, _grow, cell_core
from pipeline.inference.slicing import Region, SliceJob, region_slices, uncovered_slices
from pipeline.inference.zones import fragments_of, in_zone, zone_plan
from pipeline.vision.tiling import kept_cells, slice_grid


def test_cores_tile_the_grid() -> None:
    for width, height, size in ((2000, 1500, 512), (700, 300, 256), (512, 512, 512)):
        grid = slice_grid(width, height, size, 0.25)
        covered = np.zeros((height, width), dtype=np.int32)
        for cell in grid:
            x1, y1, x2, y2 = cell_core(cell)
            covered[y1:y2, x1:x2] += 1
        assert (covered == 1).all()


def test_a_neighbour_that_does_not_run_becomes_a_border() -> None:
    grid = slice_grid(1280, 512, 512, 0.25)  # three slices in a row
    kept = kept_cells(grid, [True, False, True], cols=3)
    assert [c.box for c in kept] == [grid[0].box, grid[2].box]
    assert kept[0].next_x_start is None and kept[1].prev_x_end is None


@pytest.mark.parametrize("size", [256, 512, 1280])
def test_every_uncovered_cell_lies_in_the_core_of_an_unassigned_slice(size: int) -> None:
    """Two trays cover most of a 3 MP photo; whatever the slice size (the photo's plants may
    ask for 1280-px slices), every part of the photo outside both is in some slice's core: a
    plant standing there is seen (the 50 % rule of old kept no slice at all at 1280 px)."""
    width, height = 2000, 1500
    left = np.ones((1300, 900), dtype=bool)
    right = np.ones((1300, 880), dtype=bool)
    coverage = Coverage.of([(60, 100, left), (1040, 100, right)], width, height, pad_px=60)
    jobs = uncovered_slices(width, height, size, 0.25, 0.02, coverage)
    assert jobs
    seen = np.zeros_like(coverage.covered)
    for job in jobs:
        assert job.cell is not None
        x1, y1, x2, y2 = cell_core(job.cell)
        seen[y1 // CELL : -(-y2 // CELL), x1 // CELL : -(-x2 // CELL)] = True
    # every uncovered cell in a core with at least 2 % of it uncovered is seen; the rest of
    # the uncovered area lies in cores that are almost all tray (pad of another region)
    missed = ~coverage.covered & ~seen
    assert missed.sum() <= 0.02 * coverage.covered.size


def test_slices_of_a_region_reach_its_mask() -> None:
    """A thin diagonal container: the slices of its box that miss its (grown) mask are not
    run, those that reach it are."""
    n = 1200
    mask = np.zeros((n, n), dtype=bool)
    for i in range(n):
        mask[i, max(0, i - 40) : i + 40] = True
    region = Region(0, 0, 0, mask)
    coverage = Coverage.of([(0, 0, mask)], n, n, pad_px=16)
    every = region_slices(0, region, 256, 0.25)
    kept = region_slices(0, region, 256, 0.25, coverage)
    assert len(kept) < len(every) / 2
    run = {(j.x0, j.y0, j.x1, j.y1) for j in kept}
    for job in every:
        window = mask[job.y0 : job.y1, job.x0 : job.x1]
        assert ((job.x0, job.y0, job.x1, job.y1) in run) == bool(window.any())


def test_a_region_of_seedlings_and_big_plants_gets_two_zones() -> None:
    grid = [SliceJob(0, *c.box, c) for c in slice_grid(2048, 1024, 512, 0.25)]
    small = np.tile(np.array([[0, 0, 30, 30]], np.float32), (12, 1))
    big = np.tile(np.array([[0, 0, 180, 180]], np.float32), (12, 1))
    left = [j for j in grid if j.x0 < 900]
    measured = [(j, small if j.x0 < 900 else big) for j in grid[::2]]

    def local(b: np.ndarray) -> int | None:
        side = float(np.median(b[:, 2] - b[:, 0]))
        return 1536 if side > 100 else 512

    plan = zone_plan(grid, measured, 512, local, local)
    assert plan is not None and plan.large_size == 1536
    for job, large in zip(grid, plan.large, strict=True):
        assert large == (job not in left) or abs(job.x0 - 900) < 512
    # one scale everywhere: no zones
    same = [(j, small) for j, _ in measured]
    assert zone_plan(grid, same, 512, local, local) is None


def test_zone_membership_and_fragments() -> None:
    boxes = np.array([[10, 10, 20, 20], [100, 100, 110, 110]], np.float32)
    assert in_zone(boxes, [(0, 0, 50, 50)]).tolist() == [True, False]
    big = np.array([[90, 90, 200, 200]], np.float32)
    leaf = np.array([[95, 95, 150, 140], [300, 300, 320, 320], [85, 85, 120, 120]], np.float32)
    assert fragments_of(leaf, big).tolist() == [True, False, True]


def test_growing_the_coarse_mask_is_a_dilation_by_a_disc() -> None:
    """``_grow`` (distance transform) equals a dilation by the disc of its radius in cells."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        cells = rng.random((h, w)) < float(rng.choice([0.001, 0.01, 0.05, 0.3]))
        pad = int(rng.integers(0, 200))
        radius = int(np.ceil(pad / CELL))
        expected = cells
        if radius > 0:
            yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
            expected = ndimage.binary_dilation(cells, structure=xx * xx + yy * yy <= radius**2)
        assert (_grow(cells, pad) == expected).all()


def test_a_mask_on_the_coarse_grid_marks_every_cell_holding_one_of_its_pixels() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        big_h, big_w = (int(v) for v in rng.integers(8, 300, 2))
        rows, cols = -(-big_h // CELL), -(-big_w // CELL)
        h, w = int(rng.integers(1, big_h + 1)), int(rng.integers(1, big_w + 1))
        y0, x0 = int(rng.integers(0, big_h - h + 1)), int(rng.integers(0, big_w - w + 1))
        mask = rng.random((h, w)) < float(rng.choice([0.001, 0.05, 0.5]))
        expected = np.zeros((rows, cols), dtype=bool)
        ys, xs = np.nonzero(mask)
        expected[(ys + y0) // CELL, (xs + x0) // CELL] = True
        assert (_coarse(mask, x0, y0, rows, cols) == expected).all()
