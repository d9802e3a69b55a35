"""Overlapping slices of a region for sliced (SAHI-style) detection. Pure."""

from __future__ import annotations

__all__ = ["Box", "axis_ranges", "slice_boxes"]

Box = tuple[int, int, int, int]


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
