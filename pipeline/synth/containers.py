"""Containers of a synthetic scene: their layout, outline, fill and where plants grow.

``container_cells`` cuts the frame into one cell per container, ``container_quad`` places
a slightly rotated quadrilateral in a cell, ``rim_and_fill`` paints its rim and substrate
(``wood_texture``, ``flat_texture``), and ``grid_spots`` / ``random_spots`` / ``plug_cells``
say where its plants stand (cell grids of trays, scattered seedbeds, plain dark trays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from pipeline.synth import textures
from pipeline.synth.geometry import Quad, quad_point

F32 = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    class_name: str
    quad: Quad


def container_cells(
    rng: np.random.Generator, n: int, width: int, height: int, margin: float = 0.03
) -> list[tuple[float, float, float, float]]:
    """Non-overlapping cells ``(x0, y0, x1, y1)``, one per container."""
    m = margin * min(width, height)
    x0, y0, x1, y1 = m, m, width - m, height - m
    if n == 1:
        return [(x0, y0, x1, y1)]
    if n == 4:
        xm = rng.uniform(0.42, 0.58) * (x1 - x0) + x0
        ym = rng.uniform(0.42, 0.58) * (y1 - y0) + y0
        return [(x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)]
    along_x = (width >= height) if rng.random() < 0.75 else (width < height)
    if n == 3 and rng.random() < 0.4:
        # Two on one side, one big on the other.
        xm = rng.uniform(0.4, 0.6) * (x1 - x0) + x0
        ym = rng.uniform(0.4, 0.6) * (y1 - y0) + y0
        if along_x:
            return [(x0, y0, xm, ym), (x0, ym, xm, y1), (xm, y0, x1, y1)]
        return [(x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, x1, y1)]
    cuts = np.sort(rng.uniform(0.85, 1.15, size=n))
    cuts = np.cumsum(cuts) / cuts.sum()
    cells = []
    prev = 0.0
    for c in cuts:
        if along_x:
            cells.append((x0 + prev * (x1 - x0), y0, x0 + float(c) * (x1 - x0), y1))
        else:
            cells.append((x0, y0 + prev * (y1 - y0), x1, y0 + float(c) * (y1 - y0)))
        prev = float(c)
    return cells


def container_quad(
    rng: np.random.Generator,
    cell: tuple[float, float, float, float],
    fill: tuple[float, float] = (0.68, 0.95),
) -> Quad:
    cx0, cy0, cx1, cy1 = cell
    cw, ch = cx1 - cx0, cy1 - cy0
    angle = float(np.clip(rng.normal(0, 0.045), -0.13, 0.13))
    ca, sa = abs(np.cos(angle)), abs(np.sin(angle))
    fw, fh = rng.uniform(*fill), rng.uniform(*fill)
    hw, hh = fw * cw / 2, fh * ch / 2
    jit = 0.02 * min(hw, hh)
    # Shrink until the rotated, jittered rectangle fits the cell.
    while hw * ca + hh * sa + jit > cw / 2 or hw * sa + hh * ca + jit > ch / 2:
        hw *= 0.97
        hh *= 0.97
        jit = 0.02 * min(hw, hh)
    ex = hw * ca + hh * sa + jit
    ey = hw * sa + hh * ca + jit
    cx = rng.uniform(cx0 + ex, cx1 - ex) if cx1 - cx0 > 2 * ex else (cx0 + cx1) / 2
    cy = rng.uniform(cy0 + ey, cy1 - ey) if cy1 - cy0 > 2 * ey else (cy0 + cy1) / 2
    c, s = np.cos(angle), np.sin(angle)
    pts = []
    for lx, ly in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)):
        dx, dy = np.clip(rng.normal(0, jit / 2, size=2), -jit, jit)
        pts.append((cx + lx * c - ly * s + dx, cy + lx * s + ly * c + dy))
    return np.asarray(np.round(np.array(pts, dtype=np.float64), 2), dtype=np.float64)


def polygon_mask(quad: Quad, ox: int, oy: int, w: int, h: int, soften: float) -> F32:
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon([(float(x - ox), float(y - oy)) for x, y in quad], fill=255)
    if soften > 0:
        img = img.filter(ImageFilter.GaussianBlur(radius=soften))
    return np.asarray(img, dtype=np.float32) / 255.0


def wood_texture(rng: np.random.Generator, h: int, w: int, scale: float, tone: float) -> F32:
    base = (tone * 1.3, tone * 0.95, tone * 0.6)
    grainy = textures.value_noise(rng, h, w, 10 * scale, 2)
    shade = 1.0 + 0.16 * grainy + 0.05 * textures.grain(rng, h, w)
    return textures.colorize(base, np.asarray(shade, dtype=np.float32))


def flat_texture(
    rng: np.random.Generator, h: int, w: int, scale: float, rgb: Sequence[float]
) -> F32:
    shade = (
        1.0
        + 0.05 * textures.value_noise(rng, h, w, 60 * scale, 2)
        + 0.03 * textures.grain(rng, h, w)
    )
    return textures.colorize(
        (float(rgb[0]), float(rgb[1]), float(rgb[2])), np.asarray(shade, dtype=np.float32)
    )


def rim_and_fill(
    lay: np.random.Generator,
    rng: np.random.Generator,
    class_name: str,
    h: int,
    w: int,
    scale: float,
) -> tuple[float, F32, F32]:
    """``(rim fraction of the short side, rim texture, interior texture)``.

    Geometry and colours come from ``lay`` (resolution-independent draws), pixel textures
    from ``rng``.
    """
    if class_name == "cajon":
        rim = lay.uniform(0.035, 0.07)
        rim_tex = wood_texture(rng, h, w, scale, lay.uniform(0.35, 0.6))
        fill = textures.soil(rng, h, w, scale)
    elif class_name == "claro-cajon":
        rim = lay.uniform(0.03, 0.06)
        g = lay.uniform(0.78, 0.95)
        rim_tex = flat_texture(
            rng, h, w, scale, (g, g * lay.uniform(0.97, 1.0), g * lay.uniform(0.9, 1.0))
        )
        fill = textures.soil(rng, h, w, scale)
    elif class_name == "plug":
        rim = lay.uniform(0.015, 0.03)
        g = lay.uniform(0.06, 0.18)
        rim_tex = flat_texture(rng, h, w, scale, (g, g, g * 1.05))
        fill = rim_tex.copy()
    elif class_name == "almacigo":
        rim = lay.uniform(0.02, 0.04)
        g = lay.uniform(0.45, 0.65)
        rim_tex = flat_texture(rng, h, w, scale, (g, g * 0.95, g * 0.85))
        fill = textures.soil(rng, h, w, scale)
    else:  # segmento: a bed section with a thin edging
        rim = lay.uniform(0.006, 0.014)
        g = lay.uniform(0.7, 0.95) if lay.random() < 0.6 else lay.uniform(0.05, 0.12)
        rim_tex = flat_texture(rng, h, w, scale, (g, g, g * 0.9))
        fill = textures.soil(rng, h, w, scale)
    return float(rim), rim_tex, fill


@dataclass(slots=True)
class PlantSpot:
    x: float
    y: float
    diameter: float


def grid_spots(
    rng: np.random.Generator,
    inner: Quad,
    outer: Quad,
    pitch: float,
    diameter: tuple[float, float],
    occupancy: float,
    jitter: float,
) -> list[PlantSpot]:
    """Plants on a (bilinearly warped) grid of ``pitch`` px cells."""
    wlen = float(np.hypot(*(inner[1] - inner[0])))
    hlen = float(np.hypot(*(inner[3] - inner[0])))
    cols = max(1, int(wlen / pitch))
    rows = max(1, int(hlen / pitch))
    spots = []
    for r in range(rows):
        for c in range(cols):
            if rng.random() > occupancy:
                continue
            s = (c + 0.5 + rng.normal(0, jitter)) / cols
            t = (r + 0.5 + rng.normal(0, jitter)) / rows
            x, y = quad_point(inner, float(np.clip(s, 0, 1)), float(np.clip(t, 0, 1)))
            spots.append(PlantSpot(x, y, rng.uniform(*diameter)))
    return spots


def random_spots(
    rng: np.random.Generator,
    inner: Quad,
    d0: float,
    count: int,
    spacing: float,
) -> list[PlantSpot]:
    """Dart throwing: centres at least ``spacing × (d_i + d_j) / 2`` apart."""
    spots: list[PlantSpot] = []
    tries = 0
    while len(spots) < count and tries < count * 30:
        tries += 1
        x, y = quad_point(inner, rng.random(), rng.random())
        d = d0 * rng.uniform(0.7, 1.3)
        ok = True
        for sp in spots:
            if np.hypot(sp.x - x, sp.y - y) < spacing * (sp.diameter + d) / 2:
                ok = False
                break
        if ok:
            spots.append(PlantSpot(x, y, d))
    return spots


def plug_cells(
    draw_fill: F32,
    rng: np.random.Generator,
    inner: Quad,
    ox: int,
    oy: int,
    rows: int,
    cols: int,
    peat: F32,
) -> F32:
    """Draw a plug tray's cells (peat squares between plastic walls) into the fill texture."""
    h, w = draw_fill.shape[:2]
    cells = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(cells)
    wall = rng.uniform(0.1, 0.2)
    for r in range(rows):
        for c in range(cols):
            s0, s1 = (c + wall) / cols, (c + 1 - wall) / cols
            t0, t1 = (r + wall) / rows, (r + 1 - wall) / rows
            pts = [quad_point(inner, s, t) for s, t in ((s0, t0), (s1, t0), (s1, t1), (s0, t1))]
            draw.polygon([(x - ox, y - oy) for x, y in pts], fill=255)
    m = np.asarray(cells, dtype=np.float32)[:, :, None] / 255.0
    return np.asarray(draw_fill * (1 - m) + peat * m, dtype=np.float32)
