"""Foliage of the condition scenes: what nurseries grow besides green rosettes.

Each group is a colour range (HSV, hue as a fraction of the colour wheel, red wrapping past 1.0)
and the shapes it comes in. ``foliage_look`` draws one crop's look from a group; the group's
name travels with every plant of the scene (``Plant.foliage``), so the evaluation can say how
many plants of each colour were missed.

- green, yellow-green: lettuces, brassicas, herbs;
- red, purple, bronze: red lettuce, coleus, heuchera, ajuga, red-leaf succulents;
- variegated: green leaves with a cream margin (hosta, euonymus), or green with red edges;
- silver: dusty miller, lavender, grey succulents (low saturation, light).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synth.plants import PlantLook

#: Leaf-count ranges per style: elongated rosette, broad rosette, blob, succulent.
LEAVES: tuple[tuple[int, int], ...] = ((3, 16), (4, 11), (6, 14), (7, 12))


@dataclass(frozen=True, slots=True)
class FoliageGroup:
    """A foliage colour group: hue, saturation and value ranges, and its likely shapes."""

    hue: tuple[float, float]
    sat: tuple[float, float]
    val: tuple[float, float]
    styles: tuple[int, ...]


FOLIAGE: dict[str, FoliageGroup] = {
    "green": FoliageGroup((0.22, 0.40), (0.35, 0.9), (0.3, 0.85), (0, 1, 2, 3)),
    "yellow-green": FoliageGroup((0.14, 0.21), (0.45, 0.9), (0.5, 0.9), (0, 1, 2)),
    "red": FoliageGroup((0.95, 1.02), (0.45, 0.85), (0.3, 0.65), (0, 1, 2, 3)),
    "purple": FoliageGroup((0.76, 0.90), (0.3, 0.7), (0.22, 0.5), (0, 1, 2, 3)),
    "bronze": FoliageGroup((0.04, 0.10), (0.4, 0.75), (0.32, 0.6), (0, 1, 2, 3)),
    "variegated": FoliageGroup((0.24, 0.38), (0.45, 0.85), (0.3, 0.6), (0, 1, 3)),
    "silver": FoliageGroup((0.30, 0.55), (0.04, 0.15), (0.6, 0.85), (0, 1, 2, 3)),
}
FOLIAGE_NAMES: tuple[str, ...] = tuple(FOLIAGE)
#: Groups the evaluation reports together as red/purple foliage (recall compared to green).
RED_PURPLE: frozenset[str] = frozenset({"red", "purple", "bronze"})


def foliage_look(rng: np.random.Generator, name: str) -> PlantLook:
    """One crop's look from the foliage group ``name``."""
    group = FOLIAGE[name]
    style = int(group.styles[int(rng.integers(len(group.styles)))])
    margin: tuple[float, float, float] | None = None
    if name == "variegated":
        if rng.random() < 0.7:  # cream margin
            margin = (float(rng.uniform(0.12, 0.16)), float(rng.uniform(0.12, 0.35)), 0.9)
        else:  # red edges on green
            margin = (float(rng.uniform(0.97, 1.01)), float(rng.uniform(0.5, 0.8)), 0.5)
    return PlantLook(
        hue=float(rng.uniform(*group.hue)) % 1.0,
        sat=float(rng.uniform(*group.sat)),
        val=float(rng.uniform(*group.val)),
        style=style,
        leaves=LEAVES[style],
        margin=margin,
        foliage=name,
    )


def pick_foliage(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """A foliage group name drawn with the given weights (names not given: weight 0)."""
    names = [n for n in FOLIAGE_NAMES if weights.get(n, 0.0) > 0]
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]
