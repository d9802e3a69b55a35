"""Seeded, deterministic synthetic nursery scenes (numpy + Pillow, no I/O).

A scene is a soil or bench background with 1–4 containers (convex quadrilaterals, slightly
rotated) holding plants. Two generators (``variant``):

* ``"classic"`` (the default models' training data): every size scales with the image width
  (reference: 2000 px, where plants are about 20–90 px across), so the same recipe works
  from 640 to 4000+ px wide; containers never touch.
* ``"wide"`` — what real nurseries vary and the classic scenes do not: containers that touch
  or overlap (a later tray covers part of an earlier one; plants whose centre it covers are
  not in the truth) or run past the frame, plain dark plastic trays without cells (``plug``
  class), plant size in photo pixels independent of the photo size (log-uniform 28–200 px,
  seedbeds 24–90 px: larger than the 128-px slice overlap), more rosette shapes and colours,
  stronger colour casts and exposure, blur up to 1.8 px, JPEG quality 55–95
  (``Scene.jpeg_quality``) and a slight perspective (corners moved up to 4 %; truth boxes
  are the bounding boxes of the warped ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from pipeline.synth import textures
from pipeline.synth.plants import (
    PlantLook,
    random_look,
    random_look_wide,
    render_plant,
    soft_shadow,
)
from pipeline.synth.types import CONTAINER_CLASSES, Box, Container, Plant, Point, Scene

F32 = NDArray[np.float32]
REFERENCE_WIDTH = 2000.0

# A quadrilateral as a (4, 2) array: top-left, top-right, bottom-right, bottom-left.
Quad = NDArray[np.float64]

Variant = Literal["classic", "wide"]
VARIANTS: tuple[Variant, ...] = ("classic", "wide")


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


@dataclass(frozen=True, slots=True)
class _Spec:
    class_name: str
    quad: Quad


def _layout(
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


def _container_quad(
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


def _polygon_mask(quad: Quad, ox: int, oy: int, w: int, h: int, soften: float) -> F32:
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon([(float(x - ox), float(y - oy)) for x, y in quad], fill=255)
    if soften > 0:
        img = img.filter(ImageFilter.GaussianBlur(radius=soften))
    return np.asarray(img, dtype=np.float32) / 255.0


def _wood(rng: np.random.Generator, h: int, w: int, scale: float, tone: float) -> F32:
    base = (tone * 1.3, tone * 0.95, tone * 0.6)
    grainy = textures.value_noise(rng, h, w, 10 * scale, 2)
    shade = 1.0 + 0.16 * grainy + 0.05 * textures.grain(rng, h, w)
    return textures.colorize(base, np.asarray(shade, dtype=np.float32))


def _flat(rng: np.random.Generator, h: int, w: int, scale: float, rgb: Sequence[float]) -> F32:
    shade = (
        1.0
        + 0.05 * textures.value_noise(rng, h, w, 60 * scale, 2)
        + 0.03 * textures.grain(rng, h, w)
    )
    return textures.colorize(
        (float(rgb[0]), float(rgb[1]), float(rgb[2])), np.asarray(shade, dtype=np.float32)
    )


def _rim_and_fill(
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
        rim_tex = _wood(rng, h, w, scale, lay.uniform(0.35, 0.6))
        fill = textures.soil(rng, h, w, scale)
    elif class_name == "claro-cajon":
        rim = lay.uniform(0.03, 0.06)
        g = lay.uniform(0.78, 0.95)
        rim_tex = _flat(
            rng, h, w, scale, (g, g * lay.uniform(0.97, 1.0), g * lay.uniform(0.9, 1.0))
        )
        fill = textures.soil(rng, h, w, scale)
    elif class_name == "plug":
        rim = lay.uniform(0.015, 0.03)
        g = lay.uniform(0.06, 0.18)
        rim_tex = _flat(rng, h, w, scale, (g, g, g * 1.05))
        fill = rim_tex.copy()
    elif class_name == "almacigo":
        rim = lay.uniform(0.02, 0.04)
        g = lay.uniform(0.45, 0.65)
        rim_tex = _flat(rng, h, w, scale, (g, g * 0.95, g * 0.85))
        fill = textures.soil(rng, h, w, scale)
    else:  # segmento: a bed section with a thin edging
        rim = lay.uniform(0.006, 0.014)
        g = lay.uniform(0.7, 0.95) if lay.random() < 0.6 else lay.uniform(0.05, 0.12)
        rim_tex = _flat(rng, h, w, scale, (g, g, g * 0.9))
        fill = textures.soil(rng, h, w, scale)
    return float(rim), rim_tex, fill


@dataclass(slots=True)
class _PlantSpot:
    x: float
    y: float
    diameter: float


def _grid_spots(
    rng: np.random.Generator,
    inner: Quad,
    outer: Quad,
    pitch: float,
    diameter: tuple[float, float],
    occupancy: float,
    jitter: float,
) -> list[_PlantSpot]:
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
            spots.append(_PlantSpot(x, y, rng.uniform(*diameter)))
    return spots


def _random_spots(
    rng: np.random.Generator,
    inner: Quad,
    d0: float,
    count: int,
    spacing: float,
) -> list[_PlantSpot]:
    """Dart throwing: centres at least ``spacing × (d_i + d_j) / 2`` apart."""
    spots: list[_PlantSpot] = []
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
            spots.append(_PlantSpot(x, y, d))
    return spots


def _plug_cells(
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


def generate_scene(
    seed: int,
    width: int = 2000,
    height: int = 1500,
    *,
    n_containers: int | None = None,
    classes: Sequence[str] | None = None,
    density: float = 1.0,
    variant: Variant = "classic",
) -> Scene:
    """A synthetic nursery photo and its ground truth, fully determined by the arguments.

    ``n_containers`` (1–4) and ``classes`` (container class per container, cycled) override
    the random choice; ``density`` scales the number of plants per container; ``variant``
    picks the generator (see the module docstring; ``"classic"`` is unchanged by it).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    wide = variant == "wide"
    # Draws of the wide generator only: the classic scenes stay bit-identical.
    wid = np.random.default_rng(np.random.SeedSequence([int(seed), 0x51DE]))
    if width < 64 or height < 64:
        raise ValueError(f"scene too small: {width}x{height}")
    if n_containers is not None and not 1 <= n_containers <= 4:
        raise ValueError("n_containers must be 1..4")
    for name in classes or ():
        if name not in CONTAINER_CLASSES:
            raise ValueError(f"unknown container class {name!r}")
    # Independent streams: layout draws do not depend on the resolution, so one seed gives
    # the same scene (containers, classes, plant positions) at any size.
    streams = np.random.SeedSequence([int(seed), 0x9E37]).spawn(5)
    lay, tex, ren, lit, pho = (np.random.default_rng(s) for s in streams)
    scale = width / REFERENCE_WIDTH

    # Background.
    if lay.random() < 0.55:
        img = textures.soil(tex, height, width, scale)
    else:
        img = textures.bench(tex, height, width, scale)

    n = n_containers if n_containers is not None else int(lay.choice([1, 2, 2, 3, 3, 4]))
    if wide:
        # Margin may be negative (trays run past the frame); cells grown so trays touch or
        # overlap their neighbours.
        cells = _layout(lay, n, width, height, margin=float(wid.uniform(-0.03, 0.03)))
        grown = []
        for x0c, y0c, x1c, y1c in cells:
            g = float(wid.uniform(1.0, 1.12)) if n > 1 else 1.0
            mx, my = (x0c + x1c) / 2, (y0c + y1c) / 2
            hw, hh = (x1c - x0c) / 2 * g, (y1c - y0c) / 2 * g
            grown.append((mx - hw, my - hh, mx + hw, my + hh))
        cells = grown
    else:
        cells = _layout(lay, n, width, height)
    specs: list[_Spec] = []
    for i, cell in enumerate(cells):
        if classes:
            name = classes[i % len(classes)]
        else:
            name = CONTAINER_CLASSES[int(lay.integers(0, len(CONTAINER_CLASSES)))]
        fill_range = (0.86, 1.0) if wide else (0.68, 0.95)
        specs.append(_Spec(name, _container_quad(lay, cell, fill_range)))
    hidden: set[int] = set()

    light_dx = lay.uniform(-0.15, 0.15)
    light_dy = lay.uniform(0.0, 0.2)
    idmap = np.zeros((height, width), dtype=np.int32)
    plant_boxes: list[Box] = []
    plant_container: list[int] = []
    plant_area: list[int] = []

    for ci, spec in enumerate(specs):
        quad = spec.quad
        x0 = max(0, int(np.floor(quad[:, 0].min())) - 2)
        y0 = max(0, int(np.floor(quad[:, 1].min())) - 2)
        x1 = min(width, int(np.ceil(quad[:, 0].max())) + 3)
        y1 = min(height, int(np.ceil(quad[:, 1].max())) + 3)
        w, h = x1 - x0, y1 - y0
        short = min(float(np.hypot(*(quad[1] - quad[0]))), float(np.hypot(*(quad[3] - quad[0]))))
        if w <= 0 or h <= 0:
            continue
        plain = wide and spec.class_name == "plug" and wid.random() < 0.5
        rim, rim_tex, fill = _rim_and_fill(lay, tex, spec.class_name, h, w, scale)
        wlen = float(np.hypot(*(quad[1] - quad[0])))
        hlen = float(np.hypot(*(quad[3] - quad[0])))
        rim_px = rim * short
        inner = inset_quad(quad, rim_px / wlen, rim_px / hlen)

        # Container drop shadow on the background, then rim, then interior.
        shadow = _polygon_mask(
            quad + np.array([rim_px * 0.3, rim_px * 0.5]), x0, y0, w, h, rim_px * 0.6
        )
        region = img[y0:y1, x0:x1]
        region *= (1.0 - 0.35 * shadow)[:, :, None]
        outer_m = _polygon_mask(quad, x0, y0, w, h, 0.6 * scale)[:, :, None]
        region[:] = region * (1 - outer_m) + rim_tex * outer_m
        if wide:
            # This tray covers what earlier trays had here.
            idmap[y0:y1, x0:x1][outer_m[:, :, 0] > 0.5] = 0
            cover = Container(spec.class_name, _as_points(quad))
            for j, box in enumerate(plant_boxes):
                if cover.contains((box[0] + box[2]) / 2, (box[1] + box[3]) / 2):
                    hidden.add(j)

        look = random_look_wide(wid) if wide else random_look(lay)
        d_wide = float(np.exp(wid.uniform(np.log(28.0), np.log(200.0))))
        if spec.class_name == "almacigo":
            d_wide = float(np.exp(wid.uniform(np.log(24.0), np.log(90.0))))
        if plain:
            g = float(wid.uniform(0.04, 0.14))
            fill = _flat(tex, h, w, scale, (g, g, g * 1.05))
            spots = _grid_spots(
                lay,
                inner,
                quad,
                d_wide * float(wid.uniform(0.95, 1.35)),
                (0.8 * d_wide, 1.15 * d_wide),
                min(1.0, lay.uniform(0.7, 0.98) * density),
                0.1,
            )
        elif spec.class_name == "plug":
            cell_px = lay.uniform(24, 62) * scale
            if wide:
                cell_px = d_wide
            cols = max(2, int(float(np.hypot(*(inner[1] - inner[0]))) / cell_px))
            rows = max(2, int(float(np.hypot(*(inner[3] - inner[0]))) / cell_px))
            peat = textures.soil(tex, h, w, scale)
            fill = _plug_cells(fill, lay, inner, x0, y0, rows, cols, peat)
            pitch_s = float(np.hypot(*(inner[1] - inner[0]))) / cols
            pitch_t = float(np.hypot(*(inner[3] - inner[0]))) / rows
            pitch = min(pitch_s, pitch_t)
            occupancy = min(1.0, lay.uniform(0.7, 0.98) * density)
            spots = []
            for r in range(rows):
                for c in range(cols):
                    if lay.random() > occupancy:
                        continue
                    px, py = quad_point(inner, (c + 0.5) / cols, (r + 0.5) / rows)
                    jx, jy = lay.normal(0, 0.06 * pitch, size=2)
                    spots.append(_PlantSpot(px + jx, py + jy, pitch * lay.uniform(0.75, 1.35)))
        elif spec.class_name == "almacigo":
            d0 = lay.uniform(22, 45) * scale
            if wide:
                d0 = d_wide
            spots = _grid_spots(
                lay,
                inner,
                quad,
                d0 * lay.uniform(0.62, 0.95),
                (0.8 * d0, 1.2 * d0),
                min(1.0, lay.uniform(0.8, 0.97) * density),
                0.18,
            )
        elif spec.class_name == "claro-cajon":
            d0 = lay.uniform(26, 85) * scale
            if wide:
                d0 = d_wide
            spots = _grid_spots(
                lay,
                inner,
                quad,
                d0 * lay.uniform(0.85, 1.3),
                (0.8 * d0, 1.2 * d0),
                min(1.0, lay.uniform(0.75, 0.95) * density),
                0.12,
            )
        elif spec.class_name == "segmento":
            d0 = lay.uniform(22, 80) * scale
            if wide:
                d0 = d_wide
            spots = _grid_spots(
                lay,
                inner,
                quad,
                d0 * lay.uniform(0.75, 1.3),
                (0.75 * d0, 1.25 * d0),
                min(1.0, lay.uniform(0.7, 0.95) * density),
                0.2,
            )
        else:  # cajon: scattered
            d0 = lay.uniform(24, 90) * scale
            if wide:
                d0 = d_wide
            e1, e2 = inner[1] - inner[0], inner[3] - inner[0]
            area = abs(float(e1[0] * e2[1] - e1[1] * e2[0]))
            fill_ratio = lay.uniform(0.25, 0.9) * density
            count = max(1, int(fill_ratio * area / (d0 * d0)))
            spots = _random_spots(lay, inner, d0, count, lay.uniform(0.55, 1.05))

        # Interior with rim shadow (depth cue).
        inner_m = _polygon_mask(inner, x0, y0, w, h, 0.6 * scale)
        depth = _polygon_mask(
            inner + np.array([rim_px * 0.4, rim_px * 0.6]), x0, y0, w, h, max(rim_px * 0.5, 1.0)
        )
        fill = fill * (0.62 + 0.38 * depth)[:, :, None]
        region[:] = region * (1 - inner_m[:, :, None]) + fill * inner_m[:, :, None]

        order = lay.permutation(len(spots))
        for k in order:
            sp = spots[int(k)]
            limit = edge_limits(quad, sp.x, sp.y) - 2.5
            radius = min(sp.diameter / 2, limit)
            if radius < max(0.6 * sp.diameter / 2, 6.0 if wide else 6.0 * scale, 4.0):
                continue
            if wide and not (0 <= sp.x < width and 0 <= sp.y < height):
                continue
            _draw_plant(
                ren,
                img,
                idmap,
                look,
                sp.x,
                sp.y,
                2 * radius,
                (light_dx, light_dy),
                len(plant_boxes) + 1,
                plant_boxes,
                plant_area,
            )
            if len(plant_area) > len(plant_container):
                plant_container.append(ci)

        # Plastic labels stuck in some containers: occlude plants, are not plants.
        if lay.random() < 0.3:
            _draw_label(lay, img, idmap, inner, scale)

    # Leaf litter / pebbles on the background (not plants).
    _draw_litter(lit, img, idmap, specs, scale)

    # Global photometrics: lighting, exposure, colour temperature, noise.
    img *= textures.lighting(pho, height, width, pho.uniform(0.5, 1.3))[:, :, None]
    exposure = pho.uniform(0.65, 1.35)
    temp = pho.uniform(-0.08, 0.08)
    tint = 0.0
    if wide:
        exposure = wid.uniform(0.55, 1.45)
        temp = wid.uniform(-0.15, 0.15)
        tint = wid.uniform(-0.06, 0.06)
    img *= np.array(
        [exposure * (1 + temp), exposure * (1 + tint), exposure * (1 - temp)], dtype=np.float32
    )
    gamma = pho.uniform(0.8, 1.2)
    np.clip(img, 0.0, 1.0, out=img)
    img **= np.float32(gamma)
    img += pho.normal(0, pho.uniform(0.004, 0.02), size=img.shape).astype(np.float32)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    blur_p = pho.random()
    if wide:
        if wid.random() < 0.4:
            blurred = Image.fromarray(out).filter(
                ImageFilter.GaussianBlur(radius=float(wid.uniform(0.4, 1.8)))
            )
            out = np.asarray(blurred, dtype=np.uint8)
    elif blur_p < 0.25:
        blurred = Image.fromarray(out).filter(
            ImageFilter.GaussianBlur(radius=pho.uniform(0.4, 1.1) * scale)
        )
        out = np.asarray(blurred, dtype=np.uint8)

    visible = np.bincount(idmap.ravel(), minlength=len(plant_boxes) + 1)
    boxes = list(plant_boxes)
    quads = [s.quad for s in specs]
    quality: int | None = None
    if wide:
        quality = int(wid.integers(55, 96))
        if wid.random() < 0.7:
            out, forward = _perspective(wid, out, 0.04)
            boxes = [_warp_box(forward, b, width, height) for b in boxes]
            quads = [_warp_points(forward, q) for q in quads]
    plants = tuple(
        Plant(
            box=boxes[i],
            container=plant_container[i],
            visibility=round(float(visible[i + 1]) / max(plant_area[i], 1), 4),
        )
        for i in range(len(plant_boxes))
        if i not in hidden and _inside(boxes[i], width, height)
    )
    containers = tuple(
        Container(
            class_name=s.class_name,
            polygon=tuple((float(x), float(y)) for x, y in q),
        )
        for s, q in zip(specs, quads, strict=True)
    )
    out.setflags(write=False)
    return Scene(
        seed=int(seed), image=out, containers=containers, plants=plants, jpeg_quality=quality
    )


def _inside(box: Box, width: int, height: int) -> bool:
    """Whether a (clipped) box's centre lies in the image and it has some extent."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return 0 <= cx < width and 0 <= cy < height and box[2] - box[0] >= 2 and box[3] - box[1] >= 2


def _homography(src: NDArray[np.float64], dst: NDArray[np.float64]) -> NDArray[np.float64]:
    """3×3 projective map taking the four ``src`` points to the four ``dst`` points."""
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    coeffs = np.linalg.solve(np.asarray(rows, np.float64), np.asarray(rhs, np.float64))
    return np.append(coeffs, 1.0).reshape(3, 3)


def _warp_points(h: NDArray[np.float64], pts: NDArray[np.float64]) -> NDArray[np.float64]:
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    q = np.c_[p, np.ones(len(p))] @ h.T
    return np.asarray(np.round(q[:, :2] / q[:, 2:3], 2), dtype=np.float64)


def _warp_box(h: NDArray[np.float64], box: Box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    q = _warp_points(h, np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64))
    return (
        float(np.clip(q[:, 0].min(), 0, width)),
        float(np.clip(q[:, 1].min(), 0, height)),
        float(np.clip(q[:, 0].max(), 0, width)),
        float(np.clip(q[:, 1].max(), 0, height)),
    )


def _perspective(
    rng: np.random.Generator, image: NDArray[np.uint8], strength: float
) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """A slight keystone: the photo's corners move outwards by up to ``strength`` of its
    size (so the frame stays filled). Returns the image and the forward map (old → new)."""
    height, width = image.shape[:2]
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    sign = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    dst = src + sign * rng.uniform(0, strength, size=(4, 2)) * np.array([width, height])
    forward = _homography(src, dst)
    backward = _homography(dst, src)
    flat = [float(v) for v in (backward / backward[2, 2]).ravel()[:8]]
    warped = Image.fromarray(image).transform(
        (width, height), Image.Transform.PERSPECTIVE, flat, Image.Resampling.BICUBIC
    )
    return np.asarray(warped, dtype=np.uint8), forward


def _draw_plant(
    rng: np.random.Generator,
    img: F32,
    idmap: NDArray[np.int32],
    look: PlantLook,
    cx: float,
    cy: float,
    diameter: float,
    light: tuple[float, float],
    plant_id: int,
    boxes: list[Box],
    areas: list[int],
) -> None:
    radius = diameter / 2
    fx0 = cx - radius
    fy0 = cy - radius
    ix0, iy0 = int(np.floor(fx0)), int(np.floor(fy0))
    rgb, alpha, pad = render_plant(rng, look, diameter, fx0 - ix0, fy0 - iy0)
    ox, oy = ix0 - pad, iy0 - pad
    size = alpha.shape[0]
    height, width = idmap.shape
    # Clip the patch to the image.
    px0, py0 = max(0, -ox), max(0, -oy)
    px1, py1 = min(size, width - ox), min(size, height - oy)
    if px1 <= px0 or py1 <= py0:
        return
    a = alpha[py0:py1, px0:px1]
    solid = a > 0.5
    if not solid.any():
        return
    # Drop shadow, offset along the scene's light direction.
    sh = soft_shadow(alpha, radius * 0.12)
    sdx, sdy = round(light[0] * diameter), round(light[1] * diameter)
    sx0, sy0 = ox + sdx, oy + sdy
    qx0, qy0 = max(0, -sx0), max(0, -sy0)
    qx1, qy1 = min(size, width - sx0), min(size, height - sy0)
    if qx1 > qx0 and qy1 > qy0:
        sreg = img[sy0 + qy0 : sy0 + qy1, sx0 + qx0 : sx0 + qx1]
        sreg *= (1.0 - 0.4 * sh[qy0:qy1, qx0:qx1])[:, :, None]
    reg = img[oy + py0 : oy + py1, ox + px0 : ox + px1]
    reg[:] = reg * (1 - a[:, :, None]) + rgb[py0:py1, px0:px1] * a[:, :, None]
    ids = idmap[oy + py0 : oy + py1, ox + px0 : ox + px1]
    ids[solid] = plant_id
    rows = np.flatnonzero(solid.any(axis=1))
    cols = np.flatnonzero(solid.any(axis=0))
    box = (
        float(ox + px0 + cols[0]),
        float(oy + py0 + rows[0]),
        float(ox + px0 + cols[-1] + 1),
        float(oy + py0 + rows[-1] + 1),
    )
    boxes.append(box)
    areas.append(int(solid.sum()))


def _draw_label(
    rng: np.random.Generator, img: F32, idmap: NDArray[np.int32], inner: Quad, scale: float
) -> None:
    """A white plastic plant label (stake seen from above): a small rotated rectangle."""
    height, width = idmap.shape
    x, y = quad_point(inner, rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9))
    lw, lh = rng.uniform(10, 18) * scale, rng.uniform(35, 70) * scale
    ang = rng.uniform(0, np.pi)
    c, s = np.cos(ang), np.sin(ang)
    pts = [
        (x + dx * c - dy * s, y + dx * s + dy * c)
        for dx, dy in ((-lw, -lh), (lw, -lh), (lw, lh), (-lw, lh))
    ]
    x0 = max(0, int(min(p[0] for p in pts)) - 1)
    y0 = max(0, int(min(p[1] for p in pts)) - 1)
    x1 = min(width, int(max(p[0] for p in pts)) + 2)
    y1 = min(height, int(max(p[1] for p in pts)) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    m = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(m).polygon([(px - x0, py - y0) for px, py in pts], fill=255)
    mask = np.asarray(m, dtype=np.float32) / 255.0
    g = rng.uniform(0.8, 0.97)
    colour = np.array([g, g, g * rng.uniform(0.9, 1.0)], dtype=np.float32)
    reg = img[y0:y1, x0:x1]
    reg[:] = reg * (1 - mask[:, :, None]) + colour * mask[:, :, None]
    idmap[y0:y1, x0:x1][mask > 0.5] = 0


def _draw_litter(
    rng: np.random.Generator,
    img: F32,
    idmap: NDArray[np.int32],
    specs: Sequence[_Spec],
    scale: float,
) -> None:
    """Dry brown leaves and pebbles outside the containers."""
    height, width = idmap.shape
    n = int(rng.integers(0, 12))
    for _ in range(n):
        x = rng.uniform(0, width)
        y = rng.uniform(0, height)
        if any(
            Container(s.class_name, _as_points(s.quad)).contains(x, y, 40 * scale) for s in specs
        ):
            continue
        if rng.random() < 0.5:
            look = PlantLook(
                hue=rng.uniform(0.04, 0.11),
                sat=rng.uniform(0.3, 0.7),
                val=rng.uniform(0.3, 0.6),
                style=int(rng.integers(0, 3)),
                leaves=(1, 3),
            )
            d = rng.uniform(15, 60) * scale
            fx0, fy0 = x - d / 2, y - d / 2
            ix0, iy0 = int(np.floor(fx0)), int(np.floor(fy0))
            rgb, alpha, pad = render_plant(rng, look, d, fx0 - ix0, fy0 - iy0)
            ox, oy = ix0 - pad, iy0 - pad
        else:
            d = max(3.0, rng.uniform(6, 20) * scale)
            size = int(np.ceil(d)) + 2
            m = Image.new("L", (size, size), 0)
            ImageDraw.Draw(m).ellipse([1, 1, d, d * rng.uniform(0.6, 1.0)], fill=255)
            alpha = np.asarray(m, dtype=np.float32) / 255.0
            g = rng.uniform(0.4, 0.75)
            rgb = np.empty((size, size, 3), dtype=np.float32)
            rgb[:] = (g, g * 0.97, g * 0.92)
            ox, oy = int(x), int(y)
        size = alpha.shape[0]
        px0, py0 = max(0, -ox), max(0, -oy)
        px1, py1 = min(size, width - ox), min(size, height - oy)
        if px1 <= px0 or py1 <= py0:
            continue
        a = alpha[py0:py1, px0:px1, None]
        reg = img[oy + py0 : oy + py1, ox + px0 : ox + px1]
        reg[:] = reg * (1 - a) + rgb[py0:py1, px0:px1] * a


def _as_points(quad: Quad) -> tuple[Point, ...]:
    return tuple((float(x), float(y)) for x, y in quad)
