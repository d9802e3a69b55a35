"""A boolean mask's outer contour as a simplified polygon. Pure numpy/scipy.

``mask_polygon`` keeps the largest 8-connected component (``largest_component``), traces
its outer boundary clockwise (Moore neighbour tracing, ``trace_outer_contour``) and
simplifies the closed contour with Douglas–Peucker (``simplify_closed``), in source pixels.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

BoolArray = NDArray[np.bool_]

__all__ = ["largest_component", "mask_polygon", "simplify_closed", "trace_outer_contour"]


# 8 neighbours, clockwise on screen (y down), starting West.
_DIRS: tuple[tuple[int, int], ...] = (
    (0, -1),
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
    (1, 0),
    (1, -1),
)
_DIR_INDEX = {d: i for i, d in enumerate(_DIRS)}


def largest_component(mask: BoolArray) -> BoolArray:
    """The largest 8-connected component of ``mask`` (empty mask in, empty mask out)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask.astype(bool, copy=False)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(sizes.argmax()))


def trace_outer_contour(mask: BoolArray) -> list[tuple[int, int]]:
    """Moore-neighbour trace of the outer boundary of the component holding the first
    foreground pixel in raster order. Returns ``(row, col)`` pixel positions, clockwise."""
    count = int(np.count_nonzero(mask))
    if count == 0:
        return []
    h, w = mask.shape
    first = int(np.argmax(mask.reshape(-1)))  # first foreground pixel in raster order
    start = (first // w, first % w)
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask

    def on(r: int, c: int) -> bool:
        return bool(padded[r + 1, c + 1])

    contour = [start]
    cur = start
    back = 0  # direction from cur to the backtrack pixel (West of start is background)
    second: tuple[int, int] | None = None
    limit = 4 * count + 16
    for _ in range(limit):
        nxt: tuple[int, int] | None = None
        prev_dir = back
        for k in range(1, 9):
            d = (back + k) % 8
            dr, dc = _DIRS[d]
            if on(cur[0] + dr, cur[1] + dc):
                nxt = (cur[0] + dr, cur[1] + dc)
                pr, pc = _DIRS[prev_dir]
                b_abs = (cur[0] + pr, cur[1] + pc)
                back = _DIR_INDEX[(b_abs[0] - nxt[0], b_abs[1] - nxt[1])]
                break
            prev_dir = d
        if nxt is None:  # isolated pixel
            return contour
        if second is None:
            second = nxt
        elif cur == start and nxt == second:
            contour.pop()  # the start appended again on arrival
            return contour
        contour.append(nxt)
        cur = nxt
    return contour


def simplify_closed(points: NDArray[np.float64], epsilon: float) -> NDArray[np.float64]:
    """Douglas-Peucker simplification of a closed polygon (first point not repeated)."""
    n = points.shape[0]
    if n <= 3 or epsilon <= 0:
        return points
    far = int(np.argmax(np.hypot(*(points - points[0]).T)))
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[far] = True
    ring = np.concatenate([points, points[:1]], axis=0)
    stack = [(0, far), (far, n)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b = ring[i], ring[j]
        seg = ring[i + 1 : j]
        ab = b - a
        norm = math.hypot(ab[0], ab[1])
        if norm == 0:
            dist = np.hypot(*(seg - a).T)
        else:
            dist = np.abs(ab[0] * (seg[:, 1] - a[1]) - ab[1] * (seg[:, 0] - a[0])) / norm
        k = int(np.argmax(dist))
        if dist[k] > epsilon:
            m = i + 1 + k
            keep[m % n] = True
            stack.append((i, m))
            stack.append((m, j))
    return points[keep]


def mask_polygon(
    mask: BoolArray, origin_x: int = 0, origin_y: int = 0, *, epsilon: float = 1.5
) -> list[tuple[float, float]]:
    """Simplified outer contour (source px, ``(x, y)`` of pixel centres) of the largest
    component of a crop-resolution mask placed at ``(origin_x, origin_y)``; [] if empty."""
    if not mask.any():
        return []
    contour = trace_outer_contour(largest_component(mask))
    pts = np.asarray([(c + origin_x + 0.5, r + origin_y + 0.5) for r, c in contour], np.float64)
    pts = simplify_closed(pts, epsilon)
    return [(round(float(x), 2), round(float(y), 2)) for x, y in pts]
