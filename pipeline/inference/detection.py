"""Sliced detection of a photo's regions, with a second pass at the plants' own scale.

``SlicedDetector`` runs the detection model over the slices of every region
(``pipeline.inference.slicing``), in device batches of ``det_batch_size``; a box cut by an
internal slice edge that the neighbour slice holds whole is dropped (``whole_elsewhere``).
Slices follow the containers as they lie (``pipeline.inference.coverage``): a region's
slices that do not reach its mask grown by the crop pad are not run, and the parts of the
photo no region covers get slices of their own, at every slice size used.

With ``rescale_slices`` a measuring pass runs first: every other slice both ways of each
region (no two overlap, a quarter of the grid), whose boxes give the region's median plant.
A region whose median plant, as the detector saw it, lies in ``[rescale_min_px,
rescale_max_px]`` then gets the rest of its grid (no extra slice). A region of larger plants
is detected again in the larger slices ``choose_slice_size`` gives
(``pipeline.vision.scale``), resized down to the detector input: a 135-px plant that came out
as two or three leaf-cluster boxes is seen whole, and the grid is smaller. A region of small
plants gets its whole grid and, as an alternative the caller weighs, a pass in smaller
slices (plants enlarged). A region with too few detections to measure follows the photo's
measurement. A region whose measured slices disagree — seedlings in one part, big plants in
another (``pipeline.inference.zones``) — is detected zone by zone, each at its own size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from pipeline.inference.config import InferenceConfig
from pipeline.inference.coverage import Coverage, cell_core
from pipeline.inference.onnx_sessions import YoloModel
from pipeline.inference.slicing import (
    RawDetections,
    Region,
    RegionDetections,
    SliceJob,
    region_detections,
    region_slices,
    unassigned_detections,
    uncovered_slices,
)
from pipeline.inference.yolo import (
    BoolArray,
    FloatArray,
    LetterboxInfo,
    decode_detect,
    letterbox_into,
)
from pipeline.inference.zones import ZonePlan, fragments_of, in_zone, zone_plan
from pipeline.vision.scale import ScaleRule, choose_slice_size, longest_sides
from pipeline.vision.tiling import Box, whole_elsewhere

__all__ = ["SlicedDetector", "SlicedResult"]


def _spaced(ranges: Iterable[tuple[int, int]]) -> set[int]:
    """Starts of the ranges taken greedily from the first so that none overlaps the last
    taken (about every other slice of a grid)."""
    taken: set[int] = set()
    end: int | None = None
    for start, stop in sorted(ranges):
        if end is None or start >= end:
            taken.add(start)
            end = stop
    return taken


def measuring_slices(grid: Sequence[SliceJob]) -> list[bool]:
    """Which slices of one region's grid the measuring pass runs: about every other column
    and every other row, no two of them overlapping (a quarter of the grid)."""
    cols = _spaced({(job.x0, job.x1) for job in grid})
    rows = _spaced({(job.y0, job.y1) for job in grid})
    return [job.x0 in cols and job.y0 in rows for job in grid]


def _boxes(raw: Sequence[RawDetections]) -> FloatArray:
    if not raw:
        return np.zeros((0, 4), np.float32)
    return np.concatenate([r[0] for r in raw], axis=0)


def _sides(boxes: Sequence[FloatArray]) -> NDArray[np.float64]:
    if not boxes:
        return np.zeros(0, np.float64)
    return longest_sides(np.concatenate([b.reshape(-1, 4) for b in boxes], axis=0))


@dataclass(frozen=True, slots=True)
class SlicedResult:
    """``found``: merged detections per region (then, with ``count_unassigned``, those in no
    region); ``alternatives``: region index → the detections of its second pass in smaller
    slices, for the caller to weigh; ``slices``: slices run, both passes."""

    found: list[RegionDetections]
    alternatives: dict[int, RegionDetections]
    slices: int


class SlicedDetector:
    """The detection model over a photo's region slices, merged per region."""

    def __init__(self, det: YoloModel, config: InferenceConfig) -> None:
        self.det = det
        self.config = config

    def coverage(self, regions: Sequence[Region], width: int, height: int) -> Coverage:
        """The regions' masks grown by ``segment_crop_pad`` of the photo's longer side."""
        pad = round(self.config.segment_crop_pad * max(width, height))
        masks = [(region.x0, region.y0, region.mask) for region in regions]
        return Coverage.of(masks, width, height, pad)

    def uncovered_slices(self, coverage: Coverage, size: int | None = None) -> list[SliceJob]:
        """Slices of the photo's grid (side ``size``, else ``slice_size``) whose core lies at
        least ``unassigned_slice_fraction`` outside every region (``uncovered_slices``)."""
        return uncovered_slices(
            coverage.width,
            coverage.height,
            size or self.config.slice_size,
            self.config.slice_overlap,
            self.config.unassigned_slice_fraction,
            coverage,
        )

    def detect_slices(
        self, rgb: NDArray[np.uint8], jobs: Sequence[SliceJob], *, batched: bool = True
    ) -> list[RawDetections]:
        """Raw per-slice detections (photo pixels, after per-slice NMS), one entry per job.

        ``batched=True`` sends ``det_batch_size`` slices (or the model's fixed batch) per
        device call; ``batched=False`` sends them one at a time (padded to a fixed batch).
        Both give the same detections.
        """
        step = self.det.batch_size(self.config.det_batch_size) if batched else 1
        results: list[RawDetections] = []
        for start in range(0, len(jobs), step):
            chunk = jobs[start : start + step]
            batch = self.det.new_batch(len(chunk))
            infos: list[LetterboxInfo] = []
            for i, job in enumerate(chunk):
                infos.append(letterbox_into(batch[i], rgb[job.y0 : job.y1, job.x0 : job.x1]))
            (out, *_) = self.det.run(batch)
            for i, job in enumerate(chunk):
                boxes, scores, classes = decode_detect(
                    out[i],
                    self.config.det_conf,
                    self.config.det_iou,
                    infos[i],
                    job.x1 - job.x0,
                    job.y1 - job.y0,
                    nc=self.det.spec.nc,
                    max_det=self.config.det_max_per_slice,
                )
                boxes[:, [0, 2]] += job.x0
                boxes[:, [1, 3]] += job.y0
                margin = self.config.slice_edge_margin_px
                if job.cell is not None and margin is not None and boxes.shape[0]:
                    keep = ~whole_elsewhere(boxes, job.cell, margin=margin)
                    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
                results.append((boxes, scores, classes))
        return results

    @property
    def scale_rule(self) -> ScaleRule | None:
        """When plants are detected again at another slice size (None: never)."""
        c = self.config
        if not c.rescale_slices:
            return None
        return ScaleRule(
            min_px=c.rescale_min_px,
            max_px=c.rescale_max_px,
            small_target_px=c.rescale_small_target_px,
            large_target_px=c.rescale_large_target_px,
            min_detections=c.rescale_min_detections,
        )

    def rescaled_sizes(
        self, boxes: Sequence[FloatArray], outside: FloatArray | None = None
    ) -> tuple[list[int], int]:
        """Slice size per region and for the unassigned slices, from the plants a first pass
        at ``slice_size`` found (``boxes``: per region; ``outside``: those of the slices
        over uncovered areas): a region's own median plant when it has enough detections,
        else the photo's (``choose_slice_size``)."""
        base = self.config.slice_size
        rule = self.scale_rule
        if rule is None:
            return [base] * len(boxes), base
        size_in = self.det.spec.input_size
        every = [*boxes, *([outside] if outside is not None else [])]
        photo = choose_slice_size(_sides(every), base, size_in, rule) or base
        sizes = [choose_slice_size(_sides([b]), base, size_in, rule) or photo for b in boxes]
        return sizes, photo

    def detect_sliced(
        self, rgb: NDArray[np.uint8], regions: Sequence[Region], *, batched: bool = True
    ) -> tuple[list[RegionDetections], int]:
        """Sliced detection over all regions; returns (per-region detections, slice count).

        ``detect`` with every alternative pass taken (nothing here to weigh them with; the
        photo analysis weighs them with band estimation). With ``count_unassigned`` the list
        has one more entry, last: the detections whose centre lies in no region.
        """
        result = self.detect(rgb, regions, batched=batched)
        found = list(result.found)
        for r, alternative in result.alternatives.items():
            found[r] = alternative
        return found, result.slices

    def zone_plan(
        self, grid: Sequence[SliceJob], measured: Sequence[tuple[SliceJob, RawDetections]]
    ) -> ZonePlan | None:
        """The big-plant and base zones of a region whose measured slices disagree on the
        plants' scale (``pipeline.inference.zones``), else None."""
        rule = self.scale_rule
        if rule is None:
            return None
        base, size_in = self.config.slice_size, self.det.spec.input_size
        local = replace(rule, min_detections=max(3, rule.min_detections // 2))
        return zone_plan(
            grid,
            [(job, raw[0]) for job, raw in measured],
            base,
            lambda b: choose_slice_size(longest_sides(b), base, size_in, local),
            lambda b: choose_slice_size(longest_sides(b), base, size_in, rule),
        )

    def detect(
        self, rgb: NDArray[np.uint8], regions: Sequence[Region], *, batched: bool = True
    ) -> SlicedResult:
        """Sliced detection over all regions, with the second passes at the plants' scale.

        A measuring pass (every other slice of each region's ``slice_size`` grid, only the
        slices that reach the region's mask) measures the plants; a region in range gets the
        rest of its grid, a region of large plants is detected again in larger slices instead,
        a region of both (``zone_plan``) each zone at its own size (``slices`` counts every
        slice run). A region of small plants whose pass in smaller slices finds at least
        ``rescale_small_gain`` times the plants of its grid gets that pass as an alternative
        (``alternatives``): enlarging a dense bed does not always separate its plants, and
        more boxes may only cover vegetation the band estimation would have counted, so the
        caller chooses with the estimate. With ``count_unassigned``, ``found`` has one more
        entry, last: the detections whose centre lies in no region, from every slice run
        (over the uncovered parts of the photo, whatever the plants' size).
        """
        height, width = rgb.shape[:2]
        base, overlap = self.config.slice_size, self.config.slice_overlap
        coverage = self.coverage(regions, width, height) if regions else None
        grids = [
            region_slices(r, region, base, overlap, coverage) for r, region in enumerate(regions)
        ]
        outside_jobs: list[SliceJob] = []
        if self.config.count_unassigned and coverage is not None:
            outside_jobs = self.uncovered_slices(coverage)
        # the measuring pass: every other slice both ways of each region (no two overlap),
        # the rest only where the plants are in range
        rescale = self.scale_rule is not None
        picked = [measuring_slices(grid) if rescale else [True] * len(grid) for grid in grids]
        first = [
            j for g, m in zip(grids, picked, strict=True) for j, p in zip(g, m, strict=True) if p
        ]
        first_raw = self.detect_slices(rgb, first + outside_jobs, batched=batched)
        n_slices = len(first) + len(outside_jobs)
        measured: list[list[tuple[SliceJob, RawDetections]]] = [[] for _ in regions]
        for job, res in zip(first, first_raw[: len(first)], strict=True):
            measured[job.region].append((job, res))
        outside = first_raw[len(first) :]
        sizes, photo = self.rescaled_sizes(
            [_boxes([res for _, res in m]) for m in measured],
            _boxes(outside) if outside_jobs else None,
        )
        per_region: list[list[RawDetections]] = [[res for _, res in m] for m in measured]
        plans = [self.zone_plan(grid, m) for grid, m in zip(grids, measured, strict=True)]
        second: list[SliceJob] = []
        zoned: list[SliceJob] = []  # big-plant zones of mixed regions, in larger slices
        for r, (size, plan) in enumerate(zip(sizes, plans, strict=True)):
            rest = [j for j, p in zip(grids[r], picked[r], strict=True) if not p]
            if plan is not None:
                second += [
                    j
                    for j, p, big in zip(grids[r], picked[r], plan.large, strict=True)
                    if not p and not big
                ]
                cores = plan.cores(grids[r], large=True)
                for job in region_slices(r, regions[r], plan.large_size, overlap, coverage):
                    if overlaps_any((job.x0, job.y0, job.x1, job.y1), cores):
                        zoned.append(job)
            elif size > base:  # large plants: the region once more in larger slices
                per_region[r] = []
                second += region_slices(r, regions[r], size, overlap, coverage)
            else:
                second += rest
        raw = self.detect_slices(rgb, second + zoned, batched=batched)
        n_slices += len(second) + len(zoned)
        for job, res in zip(second, raw[: len(second)], strict=True):
            per_region[job.region].append(res)
        large_raw: list[list[RawDetections]] = [[] for _ in regions]
        for job, res in zip(zoned, raw[len(second) :], strict=True):
            large_raw[job.region].append(res)
        for r, plan in enumerate(plans):
            if plan is not None:
                per_region[r] = by_zone(per_region[r], large_raw[r], plan, grids[r])
        found = [
            region_detections(reg, per_region[i], self.config) for i, reg in enumerate(regions)
        ]
        alternatives, extra = self.smaller_pass(rgb, regions, sizes, plans, found, coverage)
        n_slices += extra
        if self.config.count_unassigned:
            if photo > base and outside and coverage is not None:
                # the uncovered parts once more at the photo's plant size; the first pass's
                # detections stay where no slice of this pass looks
                again = self.uncovered_slices(coverage, photo)
                cores = [cell_core(j.cell) for j in again if j.cell is not None]
                outside = [_where(res, ~in_zone(res[0], cores)) for res in outside]
                outside += self.detect_slices(rgb, again, batched=batched)
                n_slices += len(again)
            every = [res for r in per_region for res in r] + list(outside)
            found.append(unassigned_detections(regions, every, self.config))
        return SlicedResult(found, alternatives, n_slices)

    def smaller_pass(
        self,
        rgb: NDArray[np.uint8],
        regions: Sequence[Region],
        sizes: Sequence[int],
        plans: Sequence[ZonePlan | None],
        found: Sequence[RegionDetections],
        coverage: Coverage | None,
    ) -> tuple[dict[int, RegionDetections], int]:
        """Regions of small plants (not zoned) in smaller slices: the alternatives that find at
        least ``rescale_small_gain`` times the plants, and the number of slices run."""
        base, overlap = self.config.slice_size, self.config.slice_overlap
        smaller = [
            job
            for r, (size, plan) in enumerate(zip(sizes, plans, strict=True))
            if size < base and plan is None
            for job in region_slices(r, regions[r], size, overlap, coverage)
        ]
        alternatives: dict[int, RegionDetections] = {}
        if not smaller:
            return alternatives, 0
        by_region: dict[int, list[RawDetections]] = {}
        for job, res in zip(smaller, self.detect_slices(rgb, smaller), strict=True):
            by_region.setdefault(job.region, []).append(res)
        gain = self.config.rescale_small_gain
        for r, raw_r in by_region.items():
            merged = region_detections(regions[r], raw_r, self.config)
            if len(merged.boxes) >= gain * max(len(found[r].boxes), 1):
                alternatives[r] = merged
        return alternatives, len(smaller)


def _where(raw: RawDetections, keep: BoolArray) -> RawDetections:
    return raw[0][keep], raw[1][keep], raw[2][keep]


def overlaps_any(box: Box, others: Sequence[Box]) -> bool:
    """Whether ``box`` overlaps (positive area) any of ``others`` (all end-exclusive)."""
    x1, y1, x2, y2 = box
    return any(min(x2, c) > max(x1, a) and min(y2, d) > max(y1, b) for a, b, c, d in others)


def by_zone(
    base_raw: Sequence[RawDetections],
    large_raw: Sequence[RawDetections],
    plan: ZonePlan,
    grid: Sequence[SliceJob],
) -> list[RawDetections]:
    """A mixed region's detections: each pass's boxes centred in its own zone, without the
    base-pass leaf clusters of a big plant that straddles the zones' border."""
    base_cores, large_cores = plan.cores(grid, large=False), plan.cores(grid, large=True)
    large = [_where(res, in_zone(res[0], large_cores)) for res in large_raw]
    big = _boxes(large)
    kept = []
    for res in base_raw:
        keep = in_zone(res[0], base_cores) & ~fragments_of(res[0], big)
        kept.append(_where(res, keep))
    return kept + large
