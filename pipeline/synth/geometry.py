"""Plane geometry of synthetic scenes: container quadrilaterals and the slight perspective.

A container is a convex quadrilateral (``Quad``, clockwise in image coordinates);
``quad_point`` maps the unit square onto it bilinearly, ``edge_limits`` says how large a
plant may be at a point without leaving it. ``perspective_warp`` moves the photo's corners
outwards a little (a keystone) and returns the forward homography, which ``warp_box`` and
``warp_points`` apply to the truth.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pipeline.synth.types import Box, Point

# A quadrilateral as a (4, 2) array: top-left, top-right, bottom-right, bottom-left.
Quad = NDArray[np.float64]


def quad_point(quad: Quad, s: float, t: float) -> tuple[float, float]:
    """Bilinear map of the unit square onto ``quad`` (``s`` along the top edge, ``t`` down)."""
    p = (
        (1 - s) * (1 - t) * quad[0]
        + s * (1 - t) * quad[1]
        + s * t * quad[2]
        + (1 - s) * t * quad[3]
    )
    return (float(p[0]), float(p[1]))


def inset_quad(quad: Quad, es: float, et: float) -> Quad:
    """The sub-quad ``[es, 1-es] × [et, 1-et]`` of ``quad`` in its bilinear parameters."""
    corners = [(es, et), (1 - es, et), (1 - es, 1 - et), (es, 1 - et)]
    return np.array([quad_point(quad, s, t) for s, t in corners], dtype=np.float64)


def edge_limits(quad: Quad, x: float, y: float) -> float:
    """Largest plant radius at ``(x, y)`` whose bounding *square* stays inside ``quad``.

    For each edge with inward unit normal ``n``, the square of half-side ``R`` around the
    point reaches ``R (|nx| + |ny|)`` towards the edge; it must not exceed the distance.
    """
    best = np.inf
    for i in range(4):
        x0, y0 = quad[i]
        x1, y1 = quad[(i + 1) % 4]
        ex, ey = x1 - x0, y1 - y0
        length = float(np.hypot(ex, ey))
        nx, ny = -ey / length, ex / length  # inward for clockwise (y-down) winding
        dist = (x - x0) * nx + (y - y0) * ny
        if dist <= 0:
            return 0.0
        best = min(best, dist / (abs(nx) + abs(ny)))
    return float(best)


def box_inside(box: Box, width: int, height: int) -> bool:
    """Whether a (clipped) box's centre lies in the image and it has some extent."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return 0 <= cx < width and 0 <= cy < height and box[2] - box[0] >= 2 and box[3] - box[1] >= 2


def homography(src: NDArray[np.float64], dst: NDArray[np.float64]) -> NDArray[np.float64]:
    """3×3 projective map taking the four ``src`` points to the four ``dst`` points."""
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    coeffs = np.linalg.solve(np.asarray(rows, np.float64), np.asarray(rhs, np.float64))
    return np.append(coeffs, 1.0).reshape(3, 3)


def warp_points(h: NDArray[np.float64], pts: NDArray[np.float64]) -> NDArray[np.float64]:
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    q = np.c_[p, np.ones(len(p))] @ h.T
    return np.asarray(np.round(q[:, :2] / q[:, 2:3], 2), dtype=np.float64)


def warp_box(h: NDArray[np.float64], box: Box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    q = warp_points(h, np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64))
    return (
        float(np.clip(q[:, 0].min(), 0, width)),
        float(np.clip(q[:, 1].min(), 0, height)),
        float(np.clip(q[:, 0].max(), 0, width)),
        float(np.clip(q[:, 1].max(), 0, height)),
    )


def perspective_warp(
    rng: np.random.Generator, image: NDArray[np.uint8], strength: float
) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """A slight keystone: the photo's corners move outwards by up to ``strength`` of its
    size (so the frame stays filled). Returns the image and the forward map (old → new)."""
    height, width = image.shape[:2]
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    sign = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    dst = src + sign * rng.uniform(0, strength, size=(4, 2)) * np.array([width, height])
    forward = homography(src, dst)
    backward = homography(dst, src)
    flat = [float(v) for v in (backward / backward[2, 2]).ravel()[:8]]
    warped = Image.fromarray(image).transform(
        (width, height), Image.Transform.PERSPECTIVE, flat, Image.Resampling.BICUBIC
    )
    return np.asarray(warped, dtype=np.uint8), forward


def as_points(quad: Quad) -> tuple[Point, ...]:
    return tuple((float(x), float(y)) for x, y in quad)
