"""The knobs of the condition scenes (``pipeline.synth.conditions``): one ``Recipe`` per
condition, plant size classes, and the placement of rotated containers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.synth.geometry import Quad, quad_point
from pipeline.synth.photo import HARSH, MILD, Exposure

Condition = Literal["angled", "trays", "foliage", "lighting", "mixed", "pots"]
CONDITIONS: tuple[Condition, ...] = ("angled", "trays", "foliage", "lighting", "mixed", "pots")

SizeClass = Literal["seedling", "normal", "big"]
#: Plant diameter (log-uniform, px at the reference width) and grid pitch (× diameter).
SIZES: dict[SizeClass, tuple[tuple[float, float], tuple[float, float]]] = {
    "seedling": ((16.0, 30.0), (0.75, 1.0)),
    "normal": ((24.0, 80.0), (0.85, 1.3)),
    "big": ((80.0, 135.0), (0.85, 1.2)),
}
GREENS = {"green": 0.6, "yellow-green": 0.15, "red": 0.06, "purple": 0.05, "bronze": 0.04}
COLOURS = {
    "green": 0.22,
    "yellow-green": 0.08,
    "red": 0.2,
    "purple": 0.15,
    "bronze": 0.12,
    "variegated": 0.12,
    "silver": 0.11,
}


@dataclass(frozen=True)
class Recipe:
    """The knobs of one condition (see the module docstring)."""

    containers: tuple[int, ...] = (1, 2, 2, 3, 3, 4)
    rotation_deg: tuple[float, float] = (0.0, 12.0)
    tilt: float = 0.04
    cell_trays: float = 0.35
    empty_share: tuple[float, float] = (0.03, 0.2)
    foliage: dict[str, float] = field(
        default_factory=lambda: {**GREENS, "variegated": 0.05, "silver": 0.05}
    )
    mixed_looks: float = 0.2
    sizes: dict[SizeClass, float] = field(
        default_factory=lambda: {"seedling": 0.2, "normal": 0.65, "big": 0.15}
    )
    mixed_sizes: bool = False
    exposure: Exposure = MILD
    pots: float = 0.1


RECIPES: dict[Condition, Recipe] = {
    "angled": Recipe(
        containers=(1, 1, 2, 2, 3), rotation_deg=(10.0, 45.0), tilt=0.1, cell_trays=0.5
    ),
    "trays": Recipe(rotation_deg=(0.0, 25.0), cell_trays=0.85, empty_share=(0.05, 0.4)),
    "foliage": Recipe(foliage=COLOURS, mixed_looks=0.5),
    "lighting": Recipe(exposure=HARSH),
    "mixed": Recipe(containers=(1, 2, 2, 3, 3, 4), rotation_deg=(0.0, 30.0), mixed_sizes=True),
    "pots": Recipe(containers=(0, 0, 0, 1), pots=1.0, foliage={**GREENS, "variegated": 0.05}),
}


def rotated_quad(
    rng: np.random.Generator, cell: tuple[float, float, float, float], angle: float
) -> Quad:
    """A rectangle turned by ``angle`` (radians) that fits ``cell``, corners clockwise."""
    cx0, cy0, cx1, cy1 = cell
    cw, ch = cx1 - cx0, cy1 - cy0
    ca, sa = abs(np.cos(angle)), abs(np.sin(angle))
    hw, hh = cw / 2 * rng.uniform(0.8, 1.0), ch / 2 * rng.uniform(0.7, 1.0)
    if abs(angle) > np.pi / 8 and rng.random() < 0.5:
        hw, hh = hh, hw  # a steep tray lies along the other side of its cell
    scale = min(cw / 2 / (hw * ca + hh * sa), ch / 2 / (hw * sa + hh * ca))
    scale = min(1.0, scale) * rng.uniform(0.9, 1.0)
    hw, hh = hw * scale, hh * scale
    ex, ey = hw * ca + hh * sa, hw * sa + hh * ca
    cx = rng.uniform(cx0 + ex, cx1 - ex) if cw > 2 * ex else (cx0 + cx1) / 2
    cy = rng.uniform(cy0 + ey, cy1 - ey) if ch > 2 * ey else (cy0 + cy1) / 2
    c, s = np.cos(angle), np.sin(angle)
    pts = [
        (cx + lx * c - ly * s, cy + lx * s + ly * c)
        for lx, ly in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh))
    ]
    return np.asarray(np.round(np.array(pts, dtype=np.float64), 2), dtype=np.float64)


def sub_quad(quad: Quad, s0: float, s1: float, t0: float, t1: float) -> Quad:
    """The part ``[s0, s1] × [t0, t1]`` of ``quad`` in its bilinear parameters."""
    corners = ((s0, t0), (s1, t0), (s1, t1), (s0, t1))
    return np.array([quad_point(quad, s, t) for s, t in corners], dtype=np.float64)


def diameter(rng: np.random.Generator, size: SizeClass, scale: float) -> tuple[float, float]:
    (lo, hi), (plo, phi) = SIZES[size]
    d = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * scale
    return d, d * float(rng.uniform(plo, phi))


def size_classes(rng: np.random.Generator, recipe: Recipe, n: int) -> list[SizeClass]:
    names: list[SizeClass] = list(recipe.sizes)
    p = np.array([recipe.sizes[k] for k in names], dtype=np.float64)
    chosen = [names[int(rng.choice(len(names), p=p / p.sum()))] for _ in range(n)]
    if recipe.mixed_sizes and n >= 2:
        chosen[0], chosen[1] = "seedling", "big"
        order = rng.permutation(n)
        chosen = [chosen[int(i)] for i in order]
    return chosen
