"""Cell trays of the condition scenes: plastic walls of any colour, lit wall tops, empty cells.

A cell tray is a grid of square-ish cells in the container's inner quadrilateral. Each cell is
a hole with peat (or, empty and unfilled, the tray's bottom) between walls whose tops catch the
light: the bright wall crossings and the empty cells are what a plant detector must learn not
to count. ``cell_tray`` paints the interior texture and says which cells hold a plant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from pipeline.synth import textures
from pipeline.synth.containers import flat_texture
from pipeline.synth.geometry import Quad, quad_point

F32 = NDArray[np.float32]

#: Tray plastic colours (RGB 0..1 before lighting).
WALL_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.07, 0.07, 0.075),
    "white": (0.86, 0.86, 0.84),
    "grey": (0.52, 0.52, 0.53),
    "terracotta": (0.70, 0.40, 0.26),
    "green": (0.10, 0.28, 0.14),
}
WALL_NAMES: tuple[str, ...] = tuple(WALL_COLOURS)


@dataclass(frozen=True, slots=True)
class TrayCell:
    """One cell: its centre, its pitch (px) and its interior corners (photo pixels)."""

    x: float
    y: float
    pitch: float
    quad: Quad
    planted: bool


def _cell_quad(inner: Quad, c: int, r: int, cols: int, rows: int, wall: float) -> Quad:
    s0, s1 = (c + wall) / cols, (c + 1 - wall) / cols
    t0, t1 = (r + wall) / rows, (r + 1 - wall) / rows
    return np.array(
        [quad_point(inner, s, t) for s, t in ((s0, t0), (s1, t0), (s1, t1), (s0, t1))],
        dtype=np.float64,
    )


def cell_tray(
    lay: np.random.Generator,
    tex: np.random.Generator,
    inner: Quad,
    origin: tuple[int, int],
    shape: tuple[int, int],
    scale: float,
    pitch: float,
    wall_name: str,
    empty_share: float,
    light: tuple[float, float],
) -> tuple[F32, list[TrayCell]]:
    """The interior texture (``shape`` = crop height, width at ``origin``) and the cells.

    ``pitch`` is the wanted cell side in photo pixels; ``empty_share`` the share of cells
    without a plant (of those, about half hold bare peat, the rest are unfilled). Layout draws
    come from ``lay`` (resolution-independent), pixel textures from ``tex``.
    """
    ox, oy = origin
    h, w = shape
    wlen = float(np.hypot(*(inner[1] - inner[0])))
    hlen = float(np.hypot(*(inner[3] - inner[0])))
    cols = max(2, round(wlen / pitch))
    rows = max(2, round(hlen / pitch))
    wall = float(lay.uniform(0.07, 0.15))
    base = WALL_COLOURS[wall_name]
    tone = float(lay.uniform(0.9, 1.1))
    rgb = tuple(min(1.0, v * tone) for v in base)
    plastic = flat_texture(tex, h, w, scale, rgb)
    peat = textures.soil(tex, h, w, scale)
    # labels: 0 wall, 1 peat (lit), 2 peat (in the wall's shadow), 3 bottom, 4 wall top
    lab = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(lab)
    cells: list[TrayCell] = []
    shift = np.array(light, dtype=np.float64) * pitch * 0.6
    for r in range(rows):
        for c in range(cols):
            quad = _cell_quad(inner, c, r, cols, rows, wall)
            planted = lay.random() >= empty_share
            filled = planted or lay.random() < 0.55
            pts = [(float(x - ox), float(y - oy)) for x, y in quad]
            draw.polygon(pts, fill=2 if filled else 3)
            if filled:  # the part of the hole the walls do not shade
                lit = _clip_to([(x + shift[0], y + shift[1]) for x, y in pts], pts)
                if len(lit) >= 3:
                    draw.polygon(lit, fill=1)
            cx, cy = quad_point(inner, (c + 0.5) / cols, (r + 0.5) / rows)
            cells.append(TrayCell(cx, cy, min(wlen / cols, hlen / rows), quad, planted))
    # wall tops: thin bright lines along the grid lines, brightest where two cross
    top = max(1, round(wall * min(wlen / cols, hlen / rows) * 0.45))
    for c in range(cols + 1):
        a = quad_point(inner, c / cols, 0.0)
        b = quad_point(inner, c / cols, 1.0)
        draw.line([(a[0] - ox, a[1] - oy), (b[0] - ox, b[1] - oy)], fill=4, width=top)
    for r in range(rows + 1):
        a = quad_point(inner, 0.0, r / rows)
        b = quad_point(inner, 1.0, r / rows)
        draw.line([(a[0] - ox, a[1] - oy), (b[0] - ox, b[1] - oy)], fill=4, width=top)
    labels = np.asarray(lab, dtype=np.uint8)
    out = plastic.copy()
    depth = float(lay.uniform(0.45, 0.7))
    out[labels == 1] = peat[labels == 1] * np.float32(depth)
    out[labels == 2] = peat[labels == 2] * np.float32(depth * 0.6)
    out[labels == 3] = plastic[labels == 3] * np.float32(0.55)
    out[labels == 4] = np.minimum(plastic[labels == 4] * np.float32(1.25) + 0.06, 1.0)
    return np.asarray(out, dtype=np.float32), cells


def _clip_to(
    poly: list[tuple[float, float]], box_poly: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """``poly`` clipped to the convex polygon ``box_poly`` (Sutherland–Hodgman)."""
    out = poly
    n = len(box_poly)
    for i in range(n):
        ax, ay = box_poly[i]
        bx, by = box_poly[(i + 1) % n]

        def inside(
            p: tuple[float, float], ax: float = ax, ay: float = ay, bx: float = bx, by: float = by
        ) -> bool:
            return (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) >= 0

        def cut(
            p: tuple[float, float],
            q: tuple[float, float],
            ax: float = ax,
            ay: float = ay,
            bx: float = bx,
            by: float = by,
        ) -> tuple[float, float]:
            dx, dy = q[0] - p[0], q[1] - p[1]
            ex, ey = bx - ax, by - ay
            den = ex * dy - ey * dx
            t = 0.0 if abs(den) < 1e-12 else (ey * (p[0] - ax) - ex * (p[1] - ay)) / den
            return (p[0] + t * dx, p[1] + t * dy)

        src, out = out, []
        for j, p in enumerate(src):
            q = src[(j + 1) % len(src)] if src else p
            if inside(p):
                out.append(p)
                if not inside(q):
                    out.append(cut(p, q))
            elif inside(q):
                out.append(cut(p, q))
        if not out:
            return []
    return out
