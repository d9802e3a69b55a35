"""Scale per zone of a region: one container holding seedlings and big plants. Pure numpy.

The measuring pass (every other slice of a region's grid, ``pipeline.inference.detection``)
gives each measured slice its own plant size. When some slices of one region measure plants
far above the detector's range (big plants, seen as two or three leaf-cluster boxes each) and
others measure plants in range (seedlings), one slice size for the whole region is wrong for
one of them. ``zone_plan`` then labels every slice of the grid with the size of its nearest
measured slice; the big-plant zone is detected again in larger slices, the rest at the base
size, and each detection is kept from the pass of the zone its centre lies in
(``in_zone``). A base-pass box that lies mostly inside a big plant's box across the zone
border is a fragment of it (``fragments_of``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.inference.coverage import cell_core
from pipeline.inference.slicing import SliceJob
from pipeline.vision.merge import match_metric
from pipeline.vision.tiling import Box

__all__ = ["ZonePlan", "fragments_of", "in_zone", "zone_plan"]

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float32]

#: A measured slice is "large" when its own plants ask for slices at least this much larger.
LARGE_FACTOR = 1.5


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """A mixed region's zones: per slice of its grid (same order) whether it is in the
    big-plant zone, and the slice size of that zone."""

    large: tuple[bool, ...]
    large_size: int

    def cores(self, grid: Sequence[SliceJob], large: bool) -> list[Box]:
        """The cores of the grid's slices in the big-plant zone (``large``) or the other."""
        return [_core(job) for job, flag in zip(grid, self.large, strict=True) if flag == large]


def _core(job: SliceJob) -> Box:
    return cell_core(job.cell) if job.cell is not None else (job.x0, job.y0, job.x1, job.y1)


def _centre(job: SliceJob) -> tuple[float, float]:
    return ((job.x0 + job.x1) / 2.0, (job.y0 + job.y1) / 2.0)


def zone_plan(
    grid: Sequence[SliceJob],
    measured: Sequence[tuple[SliceJob, FloatArray]],
    base: int,
    local_size: Callable[[FloatArray], int | None],
    zone_size: Callable[[FloatArray], int | None],
) -> ZonePlan | None:
    """The zones of a region whose measured slices disagree on the scale, else None.

    ``measured``: each measuring slice with its boxes; ``local_size(boxes)``: the slice size a
    slice's own plants ask for (None: too few to tell); ``zone_size(boxes)``: the same for the
    big-plant zone's boxes together. A region is mixed when at least one measured slice asks
    for ``LARGE_FACTOR`` × ``base`` or more and at least one for ``base`` or less.
    """
    known: list[tuple[SliceJob, FloatArray, bool]] = []
    for job, boxes in measured:
        size = local_size(boxes)
        if size is None:
            continue
        if size >= LARGE_FACTOR * base:
            known.append((job, boxes, True))
        elif size <= base:
            known.append((job, boxes, False))
    if not any(flag for *_, flag in known) or all(flag for *_, flag in known):
        return None
    big = np.concatenate([b.reshape(-1, 4) for _, b, flag in known if flag], axis=0)
    size = zone_size(big)
    if size is None or size < LARGE_FACTOR * base:
        return None
    centres = np.array([_centre(job) for job, *_ in known], dtype=np.float64)
    flags = np.array([flag for *_, flag in known], dtype=bool)
    large = []
    for job in grid:
        cx, cy = _centre(job)
        nearest = int(np.argmin((centres[:, 0] - cx) ** 2 + (centres[:, 1] - cy) ** 2))
        large.append(bool(flags[nearest]))
    return ZonePlan(tuple(large), int(size))


def in_zone(boxes: FloatArray, cores: Sequence[Box]) -> BoolArray:
    """Whether each box's centre lies in one of the ``cores`` (end-exclusive)."""
    out = np.zeros(boxes.shape[0], dtype=bool)
    if boxes.shape[0] == 0 or not cores:
        return out
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    for x1, y1, x2, y2 in cores:
        out |= (cx >= x1) & (cx < x2) & (cy >= y1) & (cy < y2)
    return out


def fragments_of(boxes: FloatArray, big: FloatArray, overlap: float = 0.5) -> BoolArray:
    """Which ``boxes`` lie mostly (intersection over their own area ≥ ``overlap``) inside a
    box of ``big`` at least twice their area: leaf clusters of a big plant seen whole."""
    out = np.zeros(boxes.shape[0], dtype=bool)
    if boxes.shape[0] == 0 or big.shape[0] == 0:
        return out
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    big_areas = (big[:, 2] - big[:, 0]) * (big[:, 3] - big[:, 1])
    for i in range(boxes.shape[0]):
        larger = big_areas >= 2.0 * areas[i]
        if not larger.any():
            continue
        ios = match_metric(boxes[i], big[larger], "ios")
        # intersection over the smaller box = over this one, as the other is larger
        out[i] = bool((ios >= overlap).any())
    return out
