"""Overlapping slices of a region for sliced (SAHI-style) detection. Pure.

Besides the slices themselves (:func:`slice_boxes`), :func:`slice_grid` says for each slice
where its neighbours begin and end, and :func:`whole_elsewhere` uses that to drop a box cut
by an *internal* slice edge when a neighbour slice, thanks to the overlap, holds the plant
whole: a plant cut by a slice boundary is then detected once (whole, in the neighbour)
instead of once whole and once as a fragment that the cross-slice merge may not absorb.
Boxes on a region's outer border (the photo's or segment crop's edge) are always kept: no
slice sees more of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Box",
    "SliceCell",
    "axis_ranges",
    "grid_shape",
    "kept_cells",
    "mask_bounds",
    "slice_boxes",
    "slice_grid",
    "whole_elsewhere",
]

Box = tuple[int, int, int, int]


def mask_bounds(mask: NDArray[np.bool_]) -> Box | None:
    """The bounding box ``(x1, y1, x2, y2)`` (end-exclusive) of a 2-D mask's True pixels, or
    None when it has none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def axis_ranges(length: int, size: int, step: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the slices along one axis.

    Starts are ``0, step, 2·step, …`` while a slice would still end before the border; the
    slice that reaches (or passes) the border is shifted back to end exactly at ``length``
    (its start clamped at 0). A ``length`` not larger than ``size`` gives ``[(0, length)]``.
    """
    if length <= size:
        return [(0, length)]
    ranges: list[tuple[int, int]] = []
    start = 0
    while start + size < length:
        ranges.append((start, start + size))
        start += step
    last = (length - size, length)
    if not ranges or ranges[-1] != last:
        ranges.append(last)
    return ranges


def slice_boxes(width: int, height: int, slice_size: int = 512, overlap: float = 0.25) -> list[Box]:
    """Slices ``(x1, y1, x2, y2)`` covering a ``width × height`` region, row-major.

    SAHI semantics: step = ``slice_size - int(overlap · slice_size)`` in both directions;
    the last slice of each row/column is shifted back to end at the border, so every slice
    is ``slice_size`` wide/high unless the region itself is smaller in that direction (then
    that direction is one slice of the region's size). A region smaller than one slice in
    both directions is the single box ``(0, 0, width, height)``: predicted whole.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"cannot slice an empty region of {width}×{height} pixels")
    if slice_size <= 0:
        raise ValueError(f"slice_size must be positive, got {slice_size}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    step = slice_size - int(overlap * slice_size)
    if step <= 0:
        raise ValueError(f"slice_size {slice_size} with overlap {overlap} gives no progress")
    xs = axis_ranges(int(width), int(slice_size), step)
    ys = axis_ranges(int(height), int(slice_size), step)
    return [(x1, y1, x2, y2) for y1, y2 in ys for x1, x2 in xs]


@dataclass(frozen=True, slots=True)
class SliceCell:
    """One slice of :func:`slice_grid` and where its neighbours along each axis begin/end.

    ``prev_x_end`` is where the slice to the left ends (None: the left edge is the region's
    border); ``next_x_start`` where the slice to the right begins (None: the right edge is
    the region's border); the same for y. Coordinates are region-local.
    """

    box: Box
    prev_x_end: int | None
    next_x_start: int | None
    prev_y_end: int | None
    next_y_start: int | None


def _neighbours(ranges: list[tuple[int, int]], i: int) -> tuple[int | None, int | None]:
    prev_end = ranges[i - 1][1] if i > 0 else None
    next_start = ranges[i + 1][0] if i + 1 < len(ranges) else None
    return prev_end, next_start


def slice_grid(
    width: int, height: int, slice_size: int = 512, overlap: float = 0.25
) -> list[SliceCell]:
    """The slices of :func:`slice_boxes` (same order) with their neighbours' extents."""
    boxes = slice_boxes(width, height, slice_size, overlap)
    step = slice_size - int(overlap * slice_size)
    xs = axis_ranges(int(width), int(slice_size), step)
    ys = axis_ranges(int(height), int(slice_size), step)
    cells: list[SliceCell] = []
    for j in range(len(ys)):
        py, ny = _neighbours(ys, j)
        for i in range(len(xs)):
            px, nx = _neighbours(xs, i)
            cells.append(SliceCell(boxes[j * len(xs) + i], px, nx, py, ny))
    return cells


def grid_shape(width: int, height: int, slice_size: int, overlap: float) -> tuple[int, int]:
    """``(rows, columns)`` of :func:`slice_grid`'s row-major grid."""
    step = slice_size - int(overlap * slice_size)
    return (
        len(axis_ranges(int(height), int(slice_size), step)),
        len(axis_ranges(int(width), int(slice_size), step)),
    )


def kept_cells(cells: Sequence[SliceCell], keep: Sequence[bool], cols: int) -> list[SliceCell]:
    """The kept cells of a row-major grid of ``cols`` columns, each edge towards a neighbour
    that is not kept turned into a border (None): no kept slice relies on a neighbour that
    will not run to see a plant whole."""
    out: list[SliceCell] = []
    for i, (cell, kept) in enumerate(zip(cells, keep, strict=True)):
        if not kept:
            continue
        col = i % cols

        def runs(j: int) -> bool:
            return 0 <= j < len(cells) and keep[j]

        out.append(
            SliceCell(
                cell.box,
                cell.prev_x_end if col > 0 and runs(i - 1) else None,
                cell.next_x_start if col + 1 < cols and runs(i + 1) else None,
                cell.prev_y_end if runs(i - cols) else None,
                cell.next_y_start if runs(i + cols) else None,
            )
        )
    return out


def whole_elsewhere(
    boxes: NDArray[Any], cell: SliceCell, *, margin: float = 2.0
) -> NDArray[np.bool_]:
    """Which boxes (``(N, 4)`` xyxy, region-local) a neighbour slice sees whole.

    A box *touches* an internal edge of ``cell`` when it ends within ``margin`` px of it
    (the plant is probably cut there). It is seen whole elsewhere when, along that axis, it
    lies entirely inside the neighbour across that edge, ``margin`` px clear of the
    neighbour's own edge: e.g. touching the right edge and ``x1 >= next_x_start + margin``.
    Such boxes are fragments to drop (True). A box touching an edge whose neighbour does not
    hold it (a plant wider than the overlap) is kept: no slice sees it whole, and the merge
    joins the parts. A box touching two internal edges (a corner) is dropped when each
    touched edge's neighbour holds it along its axis: the diagonal neighbour holds it whole.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx1, sy1, sx2, sy2 = (float(v) for v in cell.box)
    touched = np.zeros(b.shape[0], dtype=bool)
    covered = np.ones(b.shape[0], dtype=bool)
    for edge_hit, ok in (
        (
            (b[:, 0] <= sx1 + margin) if cell.prev_x_end is not None else None,
            (b[:, 2] <= (cell.prev_x_end or 0) - margin),
        ),
        (
            (b[:, 2] >= sx2 - margin) if cell.next_x_start is not None else None,
            (b[:, 0] >= (cell.next_x_start or 0) + margin),
        ),
        (
            (b[:, 1] <= sy1 + margin) if cell.prev_y_end is not None else None,
            (b[:, 3] <= (cell.prev_y_end or 0) - margin),
        ),
        (
            (b[:, 3] >= sy2 - margin) if cell.next_y_start is not None else None,
            (b[:, 1] >= (cell.next_y_start or 0) + margin),
        ),
    ):
        if edge_hit is None:
            continue
        touched |= edge_hit
        covered &= ~edge_hit | ok
    result: NDArray[np.bool_] = touched & covered
    return result
