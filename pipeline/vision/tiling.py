"""Slice a region into overlapping tiles (SAHI semantics). Pure."""

from __future__ import annotations

Box = tuple[int, int, int, int]


def _starts(length: int, size: int, step: int) -> list[int]:
    """Tile starts along one axis: 0, step, 2·step…, the last one flush with the border."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, step))
    starts.append(length - size)
    return sorted(set(starts))


def slice_boxes(width: int, height: int, slice_size: int = 512, overlap: float = 0.25) -> list[Box]:
    """Tiles ``(x1, y1, x2, y2)`` covering a ``width × height`` region.

    Step = ``slice_size - int(overlap · slice_size)``. The last tile of each row and column is
    shifted back to end exactly at the border. A region smaller than one slice in both
    directions is one tile, predicted whole; a dimension smaller than a slice is not tiled.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"cannot slice an empty region {width}×{height}")
    if slice_size <= 0 or not 0 <= overlap < 1:
        raise ValueError(f"bad slicing: size {slice_size}, overlap {overlap}")
    step = slice_size - int(overlap * slice_size)
    xs = _starts(width, slice_size, step)
    ys = _starts(height, slice_size, step)
    return [(x, y, min(width, x + slice_size), min(height, y + slice_size)) for y in ys for x in xs]
