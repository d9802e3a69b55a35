"""Condition scenes: everyday nursery photos the classic scenes do not cover.

Each condition is a named variant of :func:`pipeline.synth.generate_scene` that pushes one
thing to its everyday extreme on top of a common base (a few trays, mostly green plants,
mild light), so each can be measured as its own held-out set:

* ``angled`` — containers rotated 10–45° and the photo taken at an angle (keystone warp up to
  10 % of the frame);
* ``trays`` — cell trays of black, white, grey, terracotta or green plastic with lit wall
  tops and 5–40 % empty cells (bare peat or unfilled);
* ``foliage`` — red, purple, bronze, variegated and silver plants beside green ones, often
  several looks in one container, rosette, leafy, blob and succulent shapes;
* ``lighting`` — strong gradients, a hard shadow band, white-balance casts, defocus, JPEG
  quality down to 40;
* ``mixed`` — seedlings and big plants in one photo, often in one long bed, trays rotated;
* ``pots`` — loose pots on gravel, soil, concrete or fabric, some empty, outside every
  container (their plants lie in no segment and must still be counted).

Sizes follow the photo width like the classic scenes (reference 2000 px): seedlings 16–30 px,
plants 24–80 px, big plants 80–135 px at 2000 px wide, twice that at 4000 px. One seed gives
the same scene at any size. Every plant carries its foliage group; ``Scene.empty_cells`` holds
the boxes of the empty cells of cell trays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pipeline.synth import textures
from pipeline.synth.containers import (
    ContainerSpec,
    PlantSpot,
    container_cells,
    grid_spots,
    polygon_mask,
    random_spots,
    rim_and_fill,
)
from pipeline.synth.drawing import draw_label, draw_litter, draw_plant
from pipeline.synth.foliage import foliage_look, pick_foliage
from pipeline.synth.geometry import (
    Quad,
    as_points,
    box_inside,
    edge_limits,
    inset_quad,
    perspective_warp,
    warp_box,
    warp_points,
)
from pipeline.synth.photo import photograph
from pipeline.synth.plants import PlantLook
from pipeline.synth.pots import POT_COLOURS, draw_pot, ground, place_pots
from pipeline.synth.recipes import (
    CONDITIONS,
    RECIPES,
    Condition,
    Recipe,
    SizeClass,
    diameter,
    rotated_quad,
    size_classes,
    sub_quad,
)
from pipeline.synth.trays import WALL_NAMES, cell_tray
from pipeline.synth.types import CONTAINER_CLASSES, Box, Container, Plant, Scene

F32 = NDArray[np.float32]
REFERENCE_WIDTH = 2000.0


@dataclass
class _Truth:
    """What the drawing of a scene records: plants (box, owner, area, foliage), empty cells."""

    idmap: NDArray[np.int32]
    boxes: list[Box] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    areas: list[int] = field(default_factory=list)
    foliage: list[str] = field(default_factory=list)
    empty: list[Quad] = field(default_factory=list)


def _plant(
    ren: np.random.Generator,
    img: F32,
    truth: _Truth,
    look: PlantLook,
    spot: PlantSpot,
    light: tuple[float, float],
    owner: int,
) -> None:
    before = len(truth.boxes)
    draw_plant(
        ren,
        img,
        truth.idmap,
        look,
        spot.x,
        spot.y,
        spot.diameter,
        light,
        before + 1,
        truth.boxes,
        truth.areas,
    )
    if len(truth.boxes) > before:
        truth.owners.append(owner)
        truth.foliage.append(look.foliage)


def _spots(
    lay: np.random.Generator,
    class_name: str,
    inner: Quad,
    quad: Quad,
    d0: float,
    pitch: float,
    recipe: Recipe,
    split: SizeClass | None,
    scale: float,
) -> list[PlantSpot]:
    """Where the plants of a (non cell-tray) container stand."""
    occupancy = float(lay.uniform(0.75, 0.97))
    if class_name == "cajon" and split is None:
        e1, e2 = inner[1] - inner[0], inner[3] - inner[0]
        area = abs(float(e1[0] * e2[1] - e1[1] * e2[0]))
        count = max(1, int(lay.uniform(0.3, 0.9) * area / (d0 * d0)))
        return random_spots(lay, inner, d0, count, float(lay.uniform(0.6, 1.05)))
    if split is None:
        return grid_spots(lay, inner, quad, pitch, (0.8 * d0, 1.2 * d0), occupancy, 0.15)
    # one long bed, two halves: the container's own plants and ``split`` plants
    d1, p1 = diameter(lay, split, scale)
    cut = float(lay.uniform(0.35, 0.65))
    along = lay.random() < 0.5
    halves = ((0.0, cut), (cut, 1.0))
    spots: list[PlantSpot] = []
    for (a, b), (d, p) in zip(halves, ((d0, pitch), (d1, p1)), strict=True):
        part = sub_quad(inner, a, b, 0.0, 1.0) if along else sub_quad(inner, 0.0, 1.0, a, b)
        spots += grid_spots(lay, part, quad, p, (0.8 * d, 1.2 * d), occupancy, 0.12)
    return spots


def _container(
    lay: np.random.Generator,
    tex: np.random.Generator,
    ren: np.random.Generator,
    img: F32,
    truth: _Truth,
    ci: int,
    class_name: str,
    quad: Quad,
    size: SizeClass,
    recipe: Recipe,
    light: tuple[float, float],
    scale: float,
) -> None:
    """Draw one container with its plants (rim, shadow, interior, plants, maybe a label)."""
    height, width = truth.idmap.shape
    x0 = max(0, int(np.floor(quad[:, 0].min())) - 2)
    y0 = max(0, int(np.floor(quad[:, 1].min())) - 2)
    x1 = min(width, int(np.ceil(quad[:, 0].max())) + 3)
    y1 = min(height, int(np.ceil(quad[:, 1].max())) + 3)
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0:
        return
    rim, rim_tex, fill = rim_and_fill(lay, tex, class_name, h, w, scale)
    wlen = float(np.hypot(*(quad[1] - quad[0])))
    hlen = float(np.hypot(*(quad[3] - quad[0])))
    rim_px = rim * min(wlen, hlen)
    inner = inset_quad(quad, rim_px / wlen, rim_px / hlen)
    d0, pitch = diameter(lay, size, scale)
    looks = [foliage_look(lay, pick_foliage(lay, recipe.foliage))]
    if lay.random() < recipe.mixed_looks:
        looks += [foliage_look(lay, pick_foliage(lay, recipe.foliage)) for _ in range(2)]
    region = img[y0:y1, x0:x1]
    shadow = polygon_mask(
        quad + np.array([rim_px * 0.3, rim_px * 0.5]), x0, y0, w, h, max(rim_px * 0.6, 1.0)
    )
    region *= (1.0 - 0.35 * shadow)[:, :, None]
    if class_name == "plug":
        wall = WALL_NAMES[int(lay.integers(len(WALL_NAMES)))]
        fill, cells = cell_tray(
            lay,
            tex,
            inner,
            (x0, y0),
            (h, w),
            scale,
            d0 * float(lay.uniform(1.0, 1.3)),  # a cell at least as wide as its plant
            wall,
            float(lay.uniform(*recipe.empty_share)),
            light,
        )
        rim_tex = fill  # the tray's rim is its plastic
        spots = [
            PlantSpot(c.x, c.y, c.pitch * float(lay.uniform(0.75, 1.15)))
            for c in cells
            if c.planted
        ]
        truth.empty += [c.quad for c in cells if not c.planted]
    else:
        split: SizeClass | None = None
        if recipe.mixed_sizes and lay.random() < 0.5:
            split = "big" if size != "big" else "seedling"
        spots = _spots(lay, class_name, inner, quad, d0, pitch, recipe, split, scale)
    outer_m = polygon_mask(quad, x0, y0, w, h, 0.6 * scale)[:, :, None]
    region[:] = region * (1 - outer_m) + rim_tex * outer_m
    inner_m = polygon_mask(inner, x0, y0, w, h, 0.6 * scale)
    depth = polygon_mask(
        inner + np.array([rim_px * 0.4, rim_px * 0.6]), x0, y0, w, h, max(rim_px * 0.5, 1.0)
    )
    fill = fill * (0.62 + 0.38 * depth)[:, :, None]
    region[:] = region * (1 - inner_m[:, :, None]) + fill * inner_m[:, :, None]
    for k in lay.permutation(len(spots)):
        sp = spots[int(k)]
        look = looks[int(lay.integers(len(looks)))]  # drawn first: the same at any size
        radius = min(sp.diameter / 2, edge_limits(quad, sp.x, sp.y) - 1.5 * scale)
        if radius < max(0.6 * sp.diameter / 2, 3.0) or not (
            0 <= sp.x < width and 0 <= sp.y < height
        ):
            continue
        _plant(ren, img, truth, look, PlantSpot(sp.x, sp.y, 2 * radius), light, ci)
    if lay.random() < 0.3:
        draw_label(lay, img, truth.idmap, inner, scale)


def _loose_pots(
    lay: np.random.Generator,
    tex: np.random.Generator,
    ren: np.random.Generator,
    img: F32,
    truth: _Truth,
    specs: list[tuple[str, Quad]],
    recipe: Recipe,
    light: tuple[float, float],
    scale: float,
) -> None:
    height, width = truth.idmap.shape
    d = float(np.exp(lay.uniform(np.log(36.0), np.log(110.0)))) * scale
    pot_d = d * float(lay.uniform(1.15, 1.5))
    avoid = [
        (float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max()))
        for _, q in specs
    ]
    pots = place_pots(lay, width, height, pot_d, float(lay.uniform(0.05, 0.25)), avoid)
    colour = POT_COLOURS[int(lay.integers(len(POT_COLOURS)))]
    peat = textures.soil(tex, height, width, scale)
    looks = [foliage_look(lay, pick_foliage(lay, recipe.foliage)) for _ in range(2)]
    for pot in pots:
        draw_pot(img, lay, pot, colour, peat, light)
        if pot.planted:
            look = looks[int(lay.integers(len(looks)))]
            side = pot.diameter * float(lay.uniform(0.7, 1.05))
            _plant(ren, img, truth, look, PlantSpot(pot.x, pot.y, side), light, -1)
        else:
            r = pot.diameter * 0.4
            truth.empty.append(
                np.array(
                    [
                        (pot.x - r, pot.y - r),
                        (pot.x + r, pot.y - r),
                        (pot.x + r, pot.y + r),
                        (pot.x - r, pot.y + r),
                    ]
                )
            )


def generate_condition(seed: int, width: int, height: int, condition: Condition) -> Scene:
    """A condition scene (see the module docstring), fully determined by the arguments."""
    recipe = RECIPES[condition]
    tag = CONDITIONS.index(condition)
    streams = np.random.SeedSequence([int(seed), 0xC0D1, tag]).spawn(5)
    lay, tex, ren, lit, pho = (np.random.default_rng(s) for s in streams)
    scale = width / REFERENCE_WIDTH
    if recipe.pots >= 1.0 or lay.random() < 0.35:
        img = ground(tex, height, width, scale)
    elif lay.random() < 0.55:
        img = textures.soil(tex, height, width, scale)
    else:
        img = textures.bench(tex, height, width, scale)
    n = int(lay.choice(recipe.containers))
    specs: list[tuple[str, Quad]] = []
    if n:
        cells = container_cells(lay, n, width, height, margin=float(lay.uniform(-0.01, 0.04)))
        for cell in cells:
            angle = np.deg2rad(lay.uniform(*recipe.rotation_deg)) * (
                1 if lay.random() < 0.5 else -1
            )
            if lay.random() < recipe.cell_trays:
                name = "plug"
            else:
                name = str(lay.choice([c for c in CONTAINER_CLASSES if c != "plug"]))
            specs.append((name, rotated_quad(lay, cell, float(angle))))
    light = (float(lay.uniform(-0.15, 0.15)), float(lay.uniform(0.0, 0.2)))
    truth = _Truth(np.zeros((height, width), dtype=np.int32))
    for ci, ((name, quad), size) in enumerate(
        zip(specs, size_classes(lay, recipe, n), strict=True)
    ):
        _container(lay, tex, ren, img, truth, ci, name, quad, size, recipe, light, scale)
    if recipe.pots > 0 and lay.random() < recipe.pots:
        _loose_pots(lay, tex, ren, img, truth, specs, recipe, light, scale)
    draw_litter(lit, img, truth.idmap, [ContainerSpec(name, q) for name, q in specs], scale)
    out = photograph(pho, img, scale, recipe.exposure)
    quality = int(pho.integers(recipe.exposure.jpeg[0], recipe.exposure.jpeg[1] + 1))
    boxes = list(truth.boxes)
    quads = [q for _, q in specs]
    empty = list(truth.empty)
    if recipe.tilt > 0 and pho.random() < 0.8:
        out, forward = perspective_warp(pho, out, recipe.tilt)
        boxes = [warp_box(forward, b, width, height) for b in boxes]
        quads = [warp_points(forward, q) for q in quads]
        empty = [warp_points(forward, q) for q in empty]
    visible = np.bincount(truth.idmap.ravel(), minlength=len(truth.boxes) + 1)
    plants = tuple(
        Plant(
            box=boxes[i],
            container=truth.owners[i],
            visibility=round(float(visible[i + 1]) / max(truth.areas[i], 1), 4),
            foliage=truth.foliage[i],
        )
        for i in range(len(boxes))
        if box_inside(boxes[i], width, height)
    )
    containers = tuple(
        Container(class_name=name, polygon=as_points(q))
        for (name, _), q in zip(specs, quads, strict=True)
    )
    empty_boxes = tuple(
        (float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max()))
        for q in empty
    )
    out.setflags(write=False)
    return Scene(
        seed=int(seed),
        image=out,
        containers=containers,
        plants=plants,
        jpeg_quality=quality,
        empty_cells=empty_boxes,
    )
