"""Plant colours of one photo, learned from its detections, for band estimation and the
sanity check before counting (``pipeline.vision.plant_colours`` does the colour work).

Per region (container crop): the plant sample is the pixels under the detections' centres
(``PLANT_DISC``), the floor sample the region's pixels away from every detection
(``FLOOR_CLEAR``). The region's verdict decides the colours it has seen enough of, the whole
photo's (all regions' samples together) the colours it has not. The fixed green rule
(``pipeline.vision.vegetation``) still counts green that is not one of the floor's common
colours (plants the detector missed everywhere), never the floor's own green (tray plastic).

- ``vegetation(r, crop, mask)``: the crop's vegetation for band estimation, so red, purple or
  bronze plants the detector missed are estimated too, and green tray plastic is not;
- ``supported(r, boxes)``: which detections have plant colours under their centre (at least
  ``min_support`` of the pixels) or are not mostly the floor's common colours (``FLOOR_HELD``):
  a box on a lit wall crossing, an empty cell, a pot rim or gravel holds floor colours only and
  is not counted; a plant whose green the samples cannot tell apart is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.inference.slicing import Region, RegionDetections
from pipeline.inference.yolo import BoolArray, FloatArray
from pipeline.vision import kernels
from pipeline.vision.plant_colours import (
    ColourSamples,
    ColourVerdict,
    IndexArray,
    colour_index,
    discs,
    plant_pixels,
    support,
)
from pipeline.vision.vegetation import KERNELS_LOCK, vegetation_mask

__all__ = ["FLOOR_CLEAR", "PLANT_DISC", "PhotoColours", "learn_photo_colours"]

PLANT_DISC = 0.6  # plant sample: within 0.6 × half the mean box side of a detection's centre
FLOOR_CLEAR = 1.5  # floor sample: farther than 1.5 × half the mean box side from every centre
FLOOR_HELD = 0.5  # a box without plant colours is dropped only when floor colours fill this share


def _local(boxes: FloatArray, region: Region) -> FloatArray:
    local = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    local[:, [0, 2]] -= region.x0
    local[:, [1, 3]] -= region.y0
    return local


@dataclass(frozen=True)
class PhotoColours:
    """What one photo's detections say about its plant colours (see the module docstring)."""

    regions: tuple[Region, ...]
    verdicts: tuple[ColourVerdict | None, ...]  # per region, the photo's where it knows more
    indices: tuple[IndexArray, ...]  # per region, its crop's colour bins
    photo: ColourVerdict | None
    min_support: float

    def vegetation(self, r: int, crop: NDArray[np.uint8], mask: BoolArray) -> BoolArray | None:
        """Region ``r``'s vegetation in its crop, or None when no verdict exists (the fixed
        rule applies unchanged)."""
        verdict = self.verdicts[r]
        if verdict is None:
            return None
        index = self.indices[r]
        # plant colours, and what the fixed rule calls green unless it is common floor (a
        # green tray's plastic): plants of a colour the detector never found still count
        plants = plant_pixels(index, verdict.plant, verdict.floor, vegetation_mask(crop, mask))
        with KERNELS_LOCK:
            opened: BoolArray = kernels.open3x3(np.ascontiguousarray(plants))
        return opened

    def supported(self, r: int | None, boxes: FloatArray, rgb: NDArray[np.uint8]) -> BoolArray:
        """Which boxes (photo pixels) of region ``r`` (None: outside every region) have plant
        colours under at least ``min_support`` of their centre's pixels."""
        keep = np.ones(len(boxes), dtype=bool)
        verdict = self.photo if r is None else self.verdicts[r]
        if self.min_support <= 0 or verdict is None or len(boxes) == 0:
            return keep
        benefit = np.where(verdict.known, verdict.plant, True)  # unknown colours: kept
        tables = (benefit, verdict.floor)
        if r is not None:
            local = _local(boxes, self.regions[r])
            return self._kept(support(self.indices[r], tables, local, PLANT_DISC))
        for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.float64)):
            xa, ya = max(0, int(x1)), max(0, int(y1))
            xb, yb = min(rgb.shape[1], int(np.ceil(x2))), min(rgb.shape[0], int(np.ceil(y2)))
            if xb <= xa or yb <= ya:
                continue
            index = colour_index(rgb[ya:yb, xa:xb])
            box = np.array([[x1 - xa, y1 - ya, x2 - xa, y2 - ya]])
            keep[i] = self._kept(support(index, tables, box, PLANT_DISC))[0]
        return keep

    def _kept(self, shares: NDArray[np.float64]) -> BoolArray:
        """Per box, from its (plant share, floor share): kept unless it lacks plant colours
        and floor colours fill its centre."""
        plant, floor = shares
        return np.asarray((plant >= self.min_support) | (floor < FLOOR_HELD), dtype=bool)


def learn_photo_colours(
    rgb: NDArray[np.uint8],
    regions: Sequence[Region],
    found: Sequence[RegionDetections],
    min_support: float,
) -> PhotoColours:
    """Learn the plant colours of every region from its detections, and of the whole photo."""
    samples: list[ColourSamples] = []
    indices: list[IndexArray] = []
    for region, det in zip(regions, found, strict=True):
        crop = rgb[region.y0 : region.y0 + region.height, region.x0 : region.x0 + region.width]
        index = colour_index(crop)
        local = _local(det.boxes, region)
        shape = (region.height, region.width)
        plant = discs(shape, local, PLANT_DISC) & region.mask
        floor = region.mask & ~discs(shape, local, FLOOR_CLEAR)
        samples.append(ColourSamples.of(index, plant, floor))
        indices.append(index)
    photo = None
    if samples:
        total = samples[0]
        for more in samples[1:]:
            total = total + more
        photo = total.verdict()
    verdicts: list[ColourVerdict | None] = []
    for sample in samples:
        own = sample.verdict()
        verdicts.append(photo if own is None else own.over(photo))
    return PhotoColours(tuple(regions), tuple(verdicts), tuple(indices), photo, min_support)
