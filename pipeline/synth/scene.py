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

and six condition variants (``angled``, ``trays``, ``foliage``, ``lighting``, ``mixed``,
``pots``: everyday nursery photos, one condition pushed each), drawn by
:mod:`pipeline.synth.conditions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from pipeline.synth import textures
from pipeline.synth.conditions import generate_condition
from pipeline.synth.containers import (
    ContainerSpec,
    PlantSpot,
    container_cells,
    container_quad,
    flat_texture,
    grid_spots,
    plug_cells,
    polygon_mask,
    random_spots,
    rim_and_fill,
)
from pipeline.synth.drawing import draw_label, draw_litter, draw_plant
from pipeline.synth.geometry import (
    as_points,
    box_inside,
    edge_limits,
    inset_quad,
    perspective_warp,
    quad_point,
    warp_box,
    warp_points,
)
from pipeline.synth.plants import (
    random_look,
    random_look_wide,
)
from pipeline.synth.recipes import CONDITIONS
from pipeline.synth.types import CONTAINER_CLASSES, Box, Container, Plant, Scene

F32 = NDArray[np.float32]
REFERENCE_WIDTH = 2000.0


@dataclass(frozen=True)
class GridBed:
    """How one kind of container plants its grid: the plant diameter range (px at the
    reference width), the cell pitch as a share of it, the plants' size spread around it, the
    share of cells planted and the jitter of a plant in its cell (share of the pitch)."""

    diameter: tuple[float, float]
    pitch: tuple[float, float]
    size: tuple[float, float]
    occupancy: tuple[float, float]
    jitter: float


GRID_BEDS: dict[str, GridBed] = {
    "almacigo": GridBed((22, 45), (0.62, 0.95), (0.8, 1.2), (0.8, 0.97), 0.18),
    "claro-cajon": GridBed((26, 85), (0.85, 1.3), (0.8, 1.2), (0.75, 0.95), 0.12),
    "segmento": GridBed((22, 80), (0.75, 1.3), (0.75, 1.25), (0.7, 0.95), 0.2),
}


Variant = Literal["classic", "wide", "angled", "trays", "foliage", "lighting", "mixed", "pots"]
VARIANTS: tuple[Variant, ...] = ("classic", "wide", *CONDITIONS)


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
    if variant in CONDITIONS:
        if width < 64 or height < 64:
            raise ValueError(f"scene too small: {width}x{height}")
        if n_containers is not None or classes or density != 1.0:
            raise ValueError("n_containers, classes and density apply to classic/wide scenes")
        return generate_condition(seed, width, height, variant)
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
        cells = container_cells(lay, n, width, height, margin=float(wid.uniform(-0.03, 0.03)))
        grown = []
        for x0c, y0c, x1c, y1c in cells:
            g = float(wid.uniform(1.0, 1.12)) if n > 1 else 1.0
            mx, my = (x0c + x1c) / 2, (y0c + y1c) / 2
            hw, hh = (x1c - x0c) / 2 * g, (y1c - y0c) / 2 * g
            grown.append((mx - hw, my - hh, mx + hw, my + hh))
        cells = grown
    else:
        cells = container_cells(lay, n, width, height)
    specs: list[ContainerSpec] = []
    for i, cell in enumerate(cells):
        if classes:
            name = classes[i % len(classes)]
        else:
            name = CONTAINER_CLASSES[int(lay.integers(0, len(CONTAINER_CLASSES)))]
        fill_range = (0.86, 1.0) if wide else (0.68, 0.95)
        specs.append(ContainerSpec(name, container_quad(lay, cell, fill_range)))
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
        rim, rim_tex, fill = rim_and_fill(lay, tex, spec.class_name, h, w, scale)
        wlen = float(np.hypot(*(quad[1] - quad[0])))
        hlen = float(np.hypot(*(quad[3] - quad[0])))
        rim_px = rim * short
        inner = inset_quad(quad, rim_px / wlen, rim_px / hlen)

        # Container drop shadow on the background, then rim, then interior.
        shadow = polygon_mask(
            quad + np.array([rim_px * 0.3, rim_px * 0.5]), x0, y0, w, h, rim_px * 0.6
        )
        region = img[y0:y1, x0:x1]
        region *= (1.0 - 0.35 * shadow)[:, :, None]
        outer_m = polygon_mask(quad, x0, y0, w, h, 0.6 * scale)[:, :, None]
        region[:] = region * (1 - outer_m) + rim_tex * outer_m
        if wide:
            # This tray covers what earlier trays had here.
            idmap[y0:y1, x0:x1][outer_m[:, :, 0] > 0.5] = 0
            cover = Container(spec.class_name, as_points(quad))
            for j, box in enumerate(plant_boxes):
                if cover.contains((box[0] + box[2]) / 2, (box[1] + box[3]) / 2):
                    hidden.add(j)

        look = random_look_wide(wid) if wide else random_look(lay)
        d_wide = float(np.exp(wid.uniform(np.log(28.0), np.log(200.0))))
        if spec.class_name == "almacigo":
            d_wide = float(np.exp(wid.uniform(np.log(24.0), np.log(90.0))))
        if plain:
            g = float(wid.uniform(0.04, 0.14))
            fill = flat_texture(tex, h, w, scale, (g, g, g * 1.05))
            spots = grid_spots(
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
            fill = plug_cells(fill, lay, inner, x0, y0, rows, cols, peat)
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
                    spots.append(PlantSpot(px + jx, py + jy, pitch * lay.uniform(0.75, 1.35)))
        elif spec.class_name in GRID_BEDS:
            bed = GRID_BEDS[spec.class_name]
            d0 = lay.uniform(*bed.diameter) * scale
            if wide:
                d0 = d_wide
            spots = grid_spots(
                lay,
                inner,
                quad,
                d0 * lay.uniform(*bed.pitch),
                (bed.size[0] * d0, bed.size[1] * d0),
                min(1.0, lay.uniform(*bed.occupancy) * density),
                bed.jitter,
            )
        else:  # cajon: scattered
            d0 = lay.uniform(24, 90) * scale
            if wide:
                d0 = d_wide
            e1, e2 = inner[1] - inner[0], inner[3] - inner[0]
            area = abs(float(e1[0] * e2[1] - e1[1] * e2[0]))
            fill_ratio = lay.uniform(0.25, 0.9) * density
            count = max(1, int(fill_ratio * area / (d0 * d0)))
            spots = random_spots(lay, inner, d0, count, lay.uniform(0.55, 1.05))

        # Interior with rim shadow (depth cue).
        inner_m = polygon_mask(inner, x0, y0, w, h, 0.6 * scale)
        depth = polygon_mask(
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
            draw_plant(
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
            draw_label(lay, img, idmap, inner, scale)

    # Leaf litter / pebbles on the background (not plants).
    draw_litter(lit, img, idmap, specs, scale)

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
            out, forward = perspective_warp(wid, out, 0.04)
            boxes = [warp_box(forward, b, width, height) for b in boxes]
            quads = [warp_points(forward, q) for q in quads]
    plants = tuple(
        Plant(
            box=boxes[i],
            container=plant_container[i],
            visibility=round(float(visible[i + 1]) / max(plant_area[i], 1), 4),
        )
        for i in range(len(plant_boxes))
        if i not in hidden and box_inside(boxes[i], width, height)
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
