"""Detection regions, their slices, and the merge of a region's slice detections.

A ``Region`` is one container segment's crop (photo pixels) and mask; ``region_slices`` cuts
its detection box into SAHI slices (``slice_grid``, each with where its neighbours lie, for
``whole_elsewhere``), only those that reach its grown mask; ``uncovered_slices`` adds slices
over photo areas outside every region (``UNASSIGNED``): every slice of the photo's grid
whose core is partly uncovered. After detection, ``region_detections`` keeps the boxes
centred inside a region's mask and merges them with GREEDYNMM; ``unassigned_detections``
does the same for boxes centred in no region. No model here: ``PhotoAnalyzer`` runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.inference.config import InferenceConfig
from pipeline.inference.coverage import Coverage, cell_core
from pipeline.inference.yolo import BoolArray, FloatArray, IntArray
from pipeline.vision.merge import greedy_nmm
from pipeline.vision.tiling import SliceCell, grid_shape, kept_cells, slice_grid

__all__ = [
    "UNASSIGNED",
    "RawDetections",
    "Region",
    "RegionDetections",
    "SliceJob",
    "empty_detections",
    "region_detections",
    "region_slices",
    "unassigned_detections",
    "uncovered_slices",
]

RawDetections = tuple[FloatArray, FloatArray, IntArray]
"""One slice's boxes (photo pixels), scores and classes, after per-slice NMS."""

UNASSIGNED = -1


@dataclass(frozen=True, slots=True)
class Region:
    """A segment's crop: integer photo-pixel box and its crop-local boolean mask.

    ``det_box`` (photo pixels ``x0, y0, x1, y1``), when set, is the larger box the detection
    slices cover: the crop grown by ``segment_crop_pad``, so plants just outside an
    imprecise mask are still seen (and counted where their centre lies).
    """

    segment_index: int
    x0: int
    y0: int
    mask: BoolArray
    det_box: tuple[int, int, int, int] | None = None

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def detection_box(self) -> tuple[int, int, int, int]:
        if self.det_box is not None:
            return self.det_box
        return (self.x0, self.y0, self.x0 + self.width, self.y0 + self.height)


@dataclass(frozen=True, slots=True)
class SliceJob:
    """One detection input: a slice of a region, in photo pixels.

    ``region`` is the index of the region, or ``UNASSIGNED`` (-1) for a slice over photo
    areas outside every segment crop. ``cell`` (photo pixels) says where the neighbour slices
    of the same region begin and end; None: no neighbour holds anything whole.
    """

    region: int
    x0: int
    y0: int
    x1: int
    y1: int
    cell: SliceCell | None = None


@dataclass(frozen=True, slots=True)
class RegionDetections:
    """Merged detections of one region, photo pixels, best first."""

    boxes: FloatArray
    scores: FloatArray
    classes: IntArray

    def subset(self, keep: BoolArray) -> RegionDetections:
        """The detections where ``keep`` is True."""
        return RegionDetections(self.boxes[keep], self.scores[keep], self.classes[keep])


def _shift_cell(cell: SliceCell, dx: int, dy: int) -> SliceCell:
    def add(v: int | None, d: int) -> int | None:
        return None if v is None else v + d

    x1, y1, x2, y2 = cell.box
    return SliceCell(
        (x1 + dx, y1 + dy, x2 + dx, y2 + dy),
        add(cell.prev_x_end, dx),
        add(cell.next_x_start, dx),
        add(cell.prev_y_end, dy),
        add(cell.next_y_start, dy),
    )


def region_slices(
    index: int,
    region: Region,
    slice_size: int,
    overlap: float,
    coverage: Coverage | None = None,
) -> list[SliceJob]:
    """The slices (photo pixels) of one region's detection box, ``region`` = ``index``.

    With ``coverage``, only the slices that reach the region's grown mask: a turned tray's
    box corners that belong to a neighbour or the ground are not the region's to look at.
    """
    bx0, by0, bx1, by1 = region.detection_box
    grid = slice_grid(bx1 - bx0, by1 - by0, slice_size, overlap)
    cells = [_shift_cell(cell, bx0, by0) for cell in grid]
    if coverage is not None:
        _, cols = grid_shape(bx1 - bx0, by1 - by0, slice_size, overlap)
        keep = [coverage.region_hits(index, cell.box) for cell in cells]
        cells = kept_cells(cells, keep, cols)
    return [SliceJob(index, *cell.box, cell) for cell in cells]


def uncovered_slices(
    width: int,
    height: int,
    slice_size: int,
    overlap: float,
    fraction: float,
    coverage: Coverage,
) -> list[SliceJob]:
    """``UNASSIGNED`` slices of the photo's grid whose core (the part of the slice no
    neighbour is closer to) lies at least ``fraction`` outside every region's grown mask, and
    at least one cell of it: every uncovered part of the photo is in the core of a slice, so
    a plant outside every container is seen whatever its size. None when ``fraction`` ≥ 1."""
    if fraction >= 1.0:
        return []
    grid = slice_grid(width, height, slice_size, overlap)
    _, cols = grid_shape(width, height, slice_size, overlap)
    keep = []
    for cell in grid:
        x1, y1, x2, y2 = cell_core(cell)
        free = coverage.uncovered_px((x1, y1, x2, y2))
        keep.append(free > 0 and free >= fraction * (x2 - x1) * (y2 - y1))
    return [SliceJob(UNASSIGNED, *c.box, c) for c in kept_cells(grid, keep, cols)]


def centres_in(boxes: FloatArray, region: Region) -> BoolArray:
    """Whether each box's centre pixel lies inside the region's mask."""
    cx = np.floor((boxes[:, 0] + boxes[:, 2]) / 2).astype(np.int64) - region.x0
    cy = np.floor((boxes[:, 1] + boxes[:, 3]) / 2).astype(np.int64) - region.y0
    inside = (cx >= 0) & (cx < region.width) & (cy >= 0) & (cy < region.height)
    inside[inside] = region.mask[cy[inside], cx[inside]]
    result: BoolArray = inside
    return result


def concatenated(raw: Sequence[RawDetections]) -> tuple[FloatArray, FloatArray, IntArray, IntArray]:
    """Boxes, scores and classes of every slice in ``raw`` as one set each, and the index of
    the slice each box came from."""
    boxes = np.concatenate([r[0] for r in raw], axis=0)
    scores = np.concatenate([r[1] for r in raw], axis=0)
    classes = np.concatenate([r[2] for r in raw], axis=0)
    ids: IntArray = np.repeat(np.arange(len(raw), dtype=np.int64), [len(r[0]) for r in raw])
    return boxes, scores, classes, ids


def empty_detections() -> RegionDetections:
    return RegionDetections(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    )


def merged(
    boxes: FloatArray,
    scores: FloatArray,
    classes: IntArray,
    slices: IntArray,
    config: InferenceConfig,
) -> RegionDetections:
    """GREEDYNMM (IoS ``merge_ios``, class-aware; large boxes at ``merge_ios_large``)."""
    mb, ms, mc = greedy_nmm(
        boxes,
        scores,
        classes,
        threshold=config.merge_ios,
        metric="ios",
        class_agnostic=False,
        groups=None if config.merge_within_slice else slices,
        large=(
            None
            if config.merge_large_px is None
            else (config.merge_large_px, config.merge_ios_large)
        ),
    )
    return RegionDetections(
        np.asarray(mb, dtype=np.float32).reshape(-1, 4),
        np.asarray(ms, dtype=np.float32).reshape(-1),
        np.asarray(mc, dtype=np.int64).reshape(-1),
    )


def region_detections(
    region: Region, raw: Sequence[RawDetections], config: InferenceConfig
) -> RegionDetections:
    """Detections of ``raw`` centred inside the region's mask, merged."""
    if not raw:
        return empty_detections()
    boxes, scores, classes, slices = concatenated(raw)
    if boxes.shape[0] == 0:
        return empty_detections()
    inside = centres_in(boxes, region)
    if not inside.any():
        return empty_detections()
    return merged(boxes[inside], scores[inside], classes[inside], slices[inside], config)


def unassigned_detections(
    regions: Sequence[Region], raw: Sequence[RawDetections], config: InferenceConfig
) -> RegionDetections:
    """Detections of any slice in ``raw`` whose centre lies in no region's mask, merged."""
    if not raw:
        return empty_detections()
    boxes, scores, classes, slices = concatenated(raw)
    outside = np.ones(boxes.shape[0], dtype=bool)
    for region in regions:
        outside &= ~centres_in(boxes, region)
    if not outside.any():
        return empty_detections()
    return merged(boxes[outside], scores[outside], classes[outside], slices[outside], config)
