"""The measuring pass of sliced detection: which slices of a region's grid it runs."""

from __future__ import annotations

import numpy as np

from pipeline.inference.detection import measuring_slices
from pipeline.inference.slicing import Region, region_slices


def _grid(width: int, height: int, size: int = 512, overlap: float = 0.25) -> list:
    region = Region(0, 0, 0, np.ones((height, width), bool))
    return region_slices(0, region, size, overlap)


def test_every_other_slice_both_ways() -> None:
    # 4 × 4 slices of 512: starts 0, 384, 768 and 788 (the last shifted to the border)
    grid = _grid(1300, 1300)
    marks = measuring_slices(grid)
    picked = [(j.x0, j.y0) for j, m in zip(grid, marks, strict=True) if m]
    assert len(grid) == 16
    assert picked == [(0, 0), (768, 0), (0, 768), (768, 768)]
    # 5 slices along x (0, 384, 768, 1152, 1488): 0, 768 and 1488 do not overlap
    wide = _grid(2000, 400)
    assert [j.x0 for j, m in zip(wide, measuring_slices(wide), strict=True) if m] == [0, 768, 1488]


def test_picked_slices_never_overlap() -> None:
    for width, height in [(2000, 1500), (4000, 3000), (900, 3000)]:
        grid = _grid(width, height)
        chosen = [j for j, m in zip(grid, measuring_slices(grid), strict=True) if m]
        assert chosen
        for a in chosen:
            for b in chosen:
                if a is not b:
                    assert min(a.x1, b.x1) <= max(a.x0, b.x0) or min(a.y1, b.y1) <= max(a.y0, b.y0)


def test_a_single_slice_is_measured() -> None:
    grid = _grid(300, 200)
    assert measuring_slices(grid) == [True]
