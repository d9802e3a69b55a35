"""Which parts of a photo the container regions cover, on a coarse grid. Pure numpy/scipy.

Detection slices follow the containers as they lie, not their axis-aligned boxes: a tray
turned 30° leaves the corners of its box to its neighbours or to the ground. ``Coverage``
rasterises every region's mask, grown by the crop pad (plants just outside an imprecise mask
are still the region's to see), onto cells of ``CELL`` × ``CELL`` photo pixels:

- ``region_hits(r, box)``: does a slice window of region ``r`` reach its grown mask (a slice
  that does not is not run);
- ``uncovered_px(box)``: photo pixels of a window that no region covers (where the slices for
  plants outside every container go).

A cell counts as covered when any of its pixels is; sizes in pixels are cell counts × CELL².
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from pipeline.vision.tiling import Box, SliceCell

__all__ = ["CELL", "Coverage", "cell_core"]

CELL = 8
BoolArray = NDArray[np.bool_]


def _coarse(mask: BoolArray, x0: int, y0: int, rows: int, cols: int) -> BoolArray:
    """``mask`` (placed at photo pixel ``x0, y0``) on the photo's coarse grid: a cell is True
    when any of its pixels is."""
    out = np.zeros((rows, cols), dtype=bool)
    if mask.size == 0:
        return out
    # shift the mask onto the grid (its first cell starts dy, dx pixels before it), pad it
    # to whole cells and reduce each cell's block: no per-pixel index arrays
    dy, dx = y0 % CELL, x0 % CELL
    h, w = mask.shape
    ch, cw = -(-(h + dy) // CELL), -(-(w + dx) // CELL)
    padded = np.zeros((ch * CELL, cw * CELL), dtype=bool)
    padded[dy : dy + h, dx : dx + w] = mask
    blocks: BoolArray = np.asarray(padded.reshape(ch, CELL, cw, CELL).any(axis=(1, 3)))
    r0, c0 = y0 // CELL, x0 // CELL
    r1, c1 = min(rows, r0 + ch), min(cols, c0 + cw)
    out[r0:r1, c0:c1] = blocks[: r1 - r0, : c1 - c0]
    return out


def _grow(cells: BoolArray, pad_px: int) -> BoolArray:
    """``cells`` dilated by a disc of ``pad_px`` (in cells, rounded up): every cell within
    that Euclidean distance of a True one. By distance transform, linear in the grid, not in
    the disc's area (a dilation by a 31-cell disc cost ~0.17 s per container at 12 MP)."""
    radius = int(np.ceil(pad_px / CELL))
    if radius <= 0 or not cells.any():
        return cells
    grown: BoolArray = ndimage.distance_transform_edt(~cells) <= radius
    return grown


def cell_core(cell: SliceCell) -> Box:
    """The part of a slice no neighbour of its grid is closer to: from the middle of its
    overlap with each neighbour to the middle of the next (the whole slice on a border).
    The cores of a grid tile it exactly."""
    x1, y1, x2, y2 = cell.box
    return (
        x1 if cell.prev_x_end is None else (x1 + cell.prev_x_end) // 2,
        y1 if cell.prev_y_end is None else (y1 + cell.prev_y_end) // 2,
        x2 if cell.next_x_start is None else (cell.next_x_start + x2) // 2,
        y2 if cell.next_y_start is None else (cell.next_y_start + y2) // 2,
    )


@dataclass(frozen=True)
class Coverage:
    """The regions' grown masks and their union on the photo's coarse grid."""

    width: int
    height: int
    regions: tuple[BoolArray, ...]
    covered: BoolArray

    @classmethod
    def of(
        cls,
        masks: Sequence[tuple[int, int, BoolArray]],
        width: int,
        height: int,
        pad_px: int,
    ) -> Coverage:
        """From placed masks ``(x0, y0, mask)``, each grown by ``pad_px`` photo pixels."""
        rows, cols = -(-height // CELL), -(-width // CELL)
        grown = tuple(_grow(_coarse(m, x0, y0, rows, cols), pad_px) for x0, y0, m in masks)
        covered = np.zeros((rows, cols), dtype=bool)
        for g in grown:
            covered |= g
        return cls(width, height, grown, covered)

    def _window(self, box: Box) -> tuple[slice, slice]:
        x1, y1, x2, y2 = box
        return slice(y1 // CELL, -(-y2 // CELL)), slice(x1 // CELL, -(-x2 // CELL))

    def region_hits(self, region: int, box: Box) -> bool:
        """Whether the window ``box`` (photo pixels) reaches region ``region``'s grown mask."""
        return bool(self.regions[region][self._window(box)].any())

    def uncovered_px(self, box: Box) -> int:
        """Photo pixels of ``box`` (about: whole cells) that no region covers."""
        return int(np.count_nonzero(~self.covered[self._window(box)])) * CELL * CELL

    def is_covered(self, x: float, y: float) -> bool:
        """Whether the photo point ``(x, y)`` lies in a covered cell."""
        r = min(max(int(y) // CELL, 0), self.covered.shape[0] - 1)
        c = min(max(int(x) // CELL, 0), self.covered.shape[1] - 1)
        return bool(self.covered[r, c])
