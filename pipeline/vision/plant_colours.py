"""Plant colours learned from a photo's own detections: vegetation of any foliage colour. Pure.

A fixed hue gate (green 55–185°) calls red lettuce, coleus or heuchera floor, and green plastic
trays vegetation. What the detector says is plant is a better teacher: the colours under the
detections' centres (``plant``) against the colours of the container away from every detection
(``floor``: substrate, tray plastic, walls, and the few plants the detector missed).

Colours are the RGB cube in ``LEVELS``³ bins, the counts smoothed over neighbouring bins (a
leaf's shading spreads over a few). A colour is *plant* when its share of the plant sample is
at least ``ratio`` times its share of the floor sample, *floor* when the floor sample knows it
otherwise, and *unknown* when neither sample has enough of it: an unknown colour falls back to
a coarser teacher (the whole photo's samples, then the fixed green rule).

``support`` says, per detection, which share of the pixels under its centre are plant-coloured:
a box over a bright wall crossing or an empty cell holds the floor's colours only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "LEVELS",
    "ColourSamples",
    "ColourVerdict",
    "colour_index",
    "discs",
    "plant_pixels",
    "support",
    "warmup",
]

LEVELS = 16
_SHIFT = 4  # 256 / LEVELS
BoolArray = NDArray[np.bool_]
IndexArray = NDArray[np.uint16]


@njit(cache=True, nogil=True)
def _index(rgb: NDArray[np.uint8], out: IndexArray) -> None:
    h, w = out.shape
    for y in range(h):
        for x in range(w):
            r = np.uint16(rgb[y, x, 0] >> _SHIFT)
            g = np.uint16(rgb[y, x, 1] >> _SHIFT)
            b = np.uint16(rgb[y, x, 2] >> _SHIFT)
            out[y, x] = (r << 8) | (g << 4) | b


def colour_index(rgb: NDArray[np.uint8]) -> IndexArray:
    """Each pixel's bin of the ``LEVELS``³ RGB cube: ``(R >> 4) << 8 | (G >> 4) << 4 | B >> 4``
    (one compiled pass over the pixels)."""
    arr = np.asarray(rgb, dtype=np.uint8)
    out = np.empty(arr.shape[:2], dtype=np.uint16)
    if out.size:
        _index(arr, out)
    return out


@njit(cache=True, nogil=True)
def _plants(
    index: IndexArray, plant: BoolArray, floor: BoolArray, green: BoolArray, out: BoolArray
) -> None:
    h, w = out.shape
    for y in range(h):
        for x in range(w):
            colour = index[y, x]
            out[y, x] = plant[colour] or (green[y, x] and not floor[colour])


def plant_pixels(
    index: IndexArray, plant: BoolArray, floor: BoolArray, green: BoolArray
) -> BoolArray:
    """Per pixel: its colour bin is a plant colour (``plant[index]``), or the pixel is
    ``green`` (the fixed colour rule) and its bin not one of the floor's (``~floor[index]``);
    one compiled pass instead of two table look-ups and their temporaries."""
    out = np.empty(index.shape, dtype=bool)
    if out.size:
        _plants(
            np.ascontiguousarray(index),
            np.ascontiguousarray(plant, dtype=bool),
            np.ascontiguousarray(floor, dtype=bool),
            np.ascontiguousarray(green, dtype=bool),
            out,
        )
    return out


@njit(cache=True, nogil=True)
def _disc(
    x1: float, y1: float, x2: float, y2: float, scale: float, h: int, w: int
) -> tuple[float, float, float, int, int, int, int]:
    """A box's centre disc on an ``h × w`` grid: ``(cx, cy, r², ya, yb, xa, xb)``, the rows
    and columns it can touch. A pixel is in it when ``(x + ½ − cx)² + (y + ½ − cy)² ≤ r²``."""
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    r = scale * ((x2 - x1) + (y2 - y1)) / 4.0
    ya, yb = max(0, int(cy - r)), min(h, math.ceil(cy + r) + 1)
    xa, xb = max(0, int(cx - r)), min(w, math.ceil(cx + r) + 1)
    return cx, cy, r * r, ya, yb, xa, xb


@njit(cache=True, nogil=True)
def _draw(out: BoolArray, boxes: NDArray[np.float64], scale: float) -> None:
    h, w = out.shape
    for i in range(boxes.shape[0]):
        cx, cy, r2, ya, yb, xa, xb = _disc(
            boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3], scale, h, w
        )
        for y in range(ya, yb):
            dy = (y + 0.5 - cy) ** 2
            for x in range(xa, xb):
                if (x + 0.5 - cx) ** 2 + dy <= r2:
                    out[y, x] = True


def discs(shape: tuple[int, int], boxes: NDArray[np.floating], scale: float) -> BoolArray:
    """Pixels within ``scale`` × half the mean box side of each box's centre (crop pixels):
    a pixel belongs to a disc when its centre ``(col + ½, row + ½)`` lies within it."""
    out = np.zeros(shape, dtype=bool)
    b = np.ascontiguousarray(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    if b.size:
        _draw(out, b, float(scale))
    return out


@dataclass(frozen=True, slots=True)
class ColourVerdict:
    """Per colour bin: ``plant`` (plant-coloured), ``known`` (the samples had enough of it to
    tell; unknown bins are for a coarser teacher) and ``floor`` (one of the colours that make
    up most of the floor: substrate, tray plastic, walls — never vegetation, whatever a fixed
    rule says). ``plant_px``/``floor_px``: sample sizes."""

    plant: BoolArray
    known: BoolArray
    floor: BoolArray
    plant_px: int
    floor_px: int

    def over(self, other: ColourVerdict | None) -> ColourVerdict:
        """This verdict where it knows the colour, ``other``'s elsewhere."""
        if other is None:
            return self
        return ColourVerdict(
            np.where(self.known, self.plant, other.plant),
            self.known | other.known,
            np.where(self.known, self.floor, other.floor),
            self.plant_px,
            self.floor_px,
        )


@njit(cache=True, nogil=True)
def _count(index: IndexArray, where: BoolArray, counts: NDArray[np.float64]) -> None:
    h, w = index.shape
    for y in range(h):
        for x in range(w):
            if where[y, x]:
                counts[index[y, x]] += 1.0


def _histogram(index: IndexArray, where: BoolArray) -> NDArray[np.float64]:
    counts = np.zeros(LEVELS**3, dtype=np.float64)  # whole numbers: exact in float64
    if index.size:
        _count(np.ascontiguousarray(index), np.ascontiguousarray(where, dtype=bool), counts)
    cube = counts.reshape(LEVELS, LEVELS, LEVELS)
    smooth: NDArray[np.float64] = ndimage.uniform_filter(cube, size=3, mode="nearest") * 27.0
    return smooth.reshape(-1)


@dataclass(frozen=True, slots=True)
class ColourSamples:
    """Smoothed colour histograms of a plant sample and a floor sample (addable)."""

    plant: NDArray[np.float64]
    floor: NDArray[np.float64]
    plant_px: int
    floor_px: int

    @classmethod
    def of(cls, index: IndexArray, plant: BoolArray, floor: BoolArray) -> ColourSamples:
        """From the :func:`colour_index` of a crop and the two sample masks."""
        return cls(
            _histogram(index, plant),
            _histogram(index, floor),
            int(np.count_nonzero(plant)),
            int(np.count_nonzero(floor)),
        )

    def __add__(self, other: ColourSamples) -> ColourSamples:
        return ColourSamples(
            self.plant + other.plant,
            self.floor + other.floor,
            self.plant_px + other.plant_px,
            self.floor_px + other.floor_px,
        )

    def verdict(
        self,
        *,
        ratio: float = 2.0,
        min_px: int = 400,
        min_bin: float = 20.0,
        floor_share: float = 0.8,
    ) -> ColourVerdict | None:
        """Plant where a bin's share of the plant sample is at least ``ratio`` times its share
        of the floor sample; known where both samples hold ``min_bin`` pixels of it (smoothed);
        floor for the most common floor bins that together make ``floor_share`` of the floor
        sample (a few undetected plants never do); None when either sample has fewer than
        ``min_px`` pixels."""
        if self.plant_px < min_px or self.floor_px < min_px:
            return None
        share_p = self.plant / self.plant.sum()
        share_f = self.floor / self.floor.sum()
        known = (self.plant + self.floor) >= min_bin
        plant = share_p >= ratio * share_f
        order = np.argsort(-share_f, kind="stable")
        common = np.zeros(share_f.shape, dtype=bool)
        common[order[: int(np.searchsorted(np.cumsum(share_f[order]), floor_share)) + 1]] = True
        return ColourVerdict(plant, known, common & ~plant, self.plant_px, self.floor_px)


@njit(cache=True, nogil=True)
def _shares(
    index: IndexArray, tables: BoolArray, boxes: NDArray[np.float64], scale: float
) -> NDArray[np.float64]:
    h, w = index.shape
    n_tables = tables.shape[0]
    out = np.ones((n_tables, boxes.shape[0]), dtype=np.float64)
    hits = np.zeros(n_tables, dtype=np.int64)
    for i in range(boxes.shape[0]):
        ya, yb = max(0, int(boxes[i, 1])), min(h, math.ceil(boxes[i, 3]))
        xa, xb = max(0, int(boxes[i, 0])), min(w, math.ceil(boxes[i, 2]))
        if ya >= yb or xa >= xb:
            continue
        # the disc in the box's own window, as discs() draws it there
        cx, cy, r2, da, db, ea, eb = _disc(
            boxes[i, 0] - xa,
            boxes[i, 1] - ya,
            boxes[i, 2] - xa,
            boxes[i, 3] - ya,
            scale,
            yb - ya,
            xb - xa,
        )
        n = 0
        hits[:] = 0
        for y in range(da, db):
            dy = (y + 0.5 - cy) ** 2
            for x in range(ea, eb):
                if (x + 0.5 - cx) ** 2 + dy <= r2:
                    n += 1
                    colour = index[ya + y, xa + x]
                    for k in range(n_tables):
                        if tables[k, colour]:
                            hits[k] += 1
        if n > 0:
            for k in range(n_tables):
                out[k, i] = hits[k] / n
    return out


def support(
    index: IndexArray,
    colours: Sequence[BoolArray],
    boxes: NDArray[np.floating],
    scale: float,
) -> NDArray[np.float64]:
    """Per colour table (per bin, e.g. the plant colours) and per box (crop pixels), the share
    of the pixels of the box's centre disc (``scale``, see :func:`discs`, drawn in the box's
    own window) whose colour is in that table: shape ``(len(colours), len(boxes))``; 1.0 for
    a box whose disc holds no pixel."""
    b = np.ascontiguousarray(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    if not colours:
        return np.ones((0, len(b)), dtype=np.float64)
    tables = np.ascontiguousarray(np.stack([np.asarray(t, dtype=bool) for t in colours]))
    shares: NDArray[np.float64] = _shares(np.ascontiguousarray(index), tables, b, float(scale))
    return shares


def warmup() -> None:
    """Compile (or load from numba's cache) the disc and support kernels now, so the first
    photo of a process does not pay for it."""
    box = np.asarray([[2.0, 2.0, 10.0, 10.0]])
    index = colour_index(np.zeros((12, 12, 3), dtype=np.uint8))
    support(index, [np.ones(LEVELS**3, dtype=bool)], box, 0.6)
    discs((12, 12), box, 1.5)
    table = np.zeros(LEVELS**3, dtype=bool)
    plant_pixels(index, table, table, np.zeros(index.shape, dtype=bool))
    ColourSamples.of(index, np.ones(index.shape, dtype=bool), np.ones(index.shape, dtype=bool))
