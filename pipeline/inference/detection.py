"""Sliced detection of a photo's regions, with a second pass at the plants' own scale.

``SlicedDetector`` runs the detection model over the slices of every region
(``pipeline.inference.slicing``), in device batches of ``det_batch_size``; a box cut by an
internal slice edge that the neighbour slice holds whole is dropped (``whole_elsewhere``).

With ``rescale_slices`` the first pass, at ``slice_size``, also measures the plants: a
region whose median plant, as the detector saw it, lies outside ``[rescale_min_px,
rescale_max_px]`` is detected again at the slice size ``choose_slice_size`` gives
(``pipeline.vision.scale``), and its first-pass detections are replaced. Plants far larger
than the detector's training range (a 135-px plant came out as two or three leaf-cluster
boxes) are then seen whole in larger slices resized down, which is also cheaper; small
plants of dense beds are enlarged. A region with too few detections to measure follows the
photo's measurement; regions in range keep their first pass (no extra cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.inference.config import InferenceConfig
from pipeline.inference.runtime import YoloModel
from pipeline.inference.slicing import (
    UNASSIGNED,
    RawDetections,
    Region,
    RegionDetections,
    SliceJob,
    region_detections,
    region_slices,
    unassigned_detections,
    uncovered_slices,
)
from pipeline.inference.yolo import FloatArray, LetterboxInfo, decode_detect, letterbox_into
from pipeline.vision.scale import ScaleRule, choose_slice_size, longest_sides
from pipeline.vision.tiling import whole_elsewhere

__all__ = ["SlicedDetector", "SlicedResult"]


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

    def slice_jobs(
        self,
        regions: Sequence[Region],
        width: int = 0,
        height: int = 0,
    ) -> list[SliceJob]:
        """Every slice (``slice_size``) of every region, in photo pixels; with
        ``count_unassigned`` and the photo size given, then the slices over photo areas
        outside every region's crop."""
        base, overlap = self.config.slice_size, self.config.slice_overlap
        jobs: list[SliceJob] = []
        for r, region in enumerate(regions):
            jobs.extend(region_slices(r, region, base, overlap))
        if self.config.count_unassigned and width > 0 and height > 0 and regions:
            jobs.extend(self.uncovered_slices(regions, width, height))
        return jobs

    def uncovered_slices(
        self, regions: Sequence[Region], width: int, height: int, size: int | None = None
    ) -> list[SliceJob]:
        """Slices of the photo's grid (side ``size``, else ``slice_size``) at least
        ``unassigned_slice_fraction`` outside every region's crop."""
        return uncovered_slices(
            regions,
            width,
            height,
            size or self.config.slice_size,
            self.config.slice_overlap,
            self.config.unassigned_slice_fraction,
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
        self, found: Sequence[RegionDetections], outside: RegionDetections | None = None
    ) -> tuple[list[int], int]:
        """Slice size per region and for the unassigned slices, from the plants a first pass
        at ``slice_size`` found (merged, per region; ``outside``: those in no region): a
        region's own median plant when it has enough detections, else the photo's
        (``choose_slice_size``)."""
        base = self.config.slice_size
        rule = self.scale_rule
        if rule is None:
            return [base] * len(found), base
        size_in = self.det.spec.input_size
        every = [f.boxes for f in found] + ([outside.boxes] if outside is not None else [])
        photo = choose_slice_size(_sides(every), base, size_in, rule) or base
        sizes = [choose_slice_size(_sides([f.boxes]), base, size_in, rule) or photo for f in found]
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

    def detect(
        self, rgb: NDArray[np.uint8], regions: Sequence[Region], *, batched: bool = True
    ) -> SlicedResult:
        """Sliced detection over all regions, with the second passes at the plants' scale.

        A first pass at ``slice_size`` measures the plants; regions whose median plant lies
        outside the detector's range (``rescale_*``) are detected again at the slice size
        that brings it in range (``slices`` counts both passes). A region of large plants
        takes the second pass. A region of small plants whose second pass finds at least
        ``rescale_small_gain`` times the plants of the first gets it as an alternative
        (``alternatives``): enlarging a dense bed does not always separate its plants, and
        more boxes may only cover vegetation the band estimation would have counted, so the
        caller chooses with the estimate. With ``count_unassigned``, ``found`` has one more
        entry, last: the detections whose centre lies in no region (from the slices kept).
        """
        height, width = rgb.shape[:2]
        jobs = self.slice_jobs(regions, width, height)
        raw = self.detect_slices(rgb, jobs, batched=batched)
        n_slices = len(jobs)
        base, overlap = self.config.slice_size, self.config.slice_overlap
        per_region: list[list[RawDetections]] = [[] for _ in regions]
        outside: list[RawDetections] = []
        for job, res in zip(jobs, raw, strict=True):
            (outside if job.region == UNASSIGNED else per_region[job.region]).append(res)
        found = [
            region_detections(reg, per_region[i], self.config) for i, reg in enumerate(regions)
        ]
        first_outside = (
            unassigned_detections(regions, raw, self.config)
            if self.config.count_unassigned
            else None
        )
        sizes, photo = self.rescaled_sizes(found, first_outside)
        changed = False
        gain = self.config.rescale_small_gain
        alternatives: dict[int, RegionDetections] = {}
        for r, size in enumerate(sizes):
            if size == base:
                continue
            again = region_slices(r, regions[r], size, overlap)
            second = self.detect_slices(rgb, again, batched=batched)
            n_slices += len(again)
            merged = region_detections(regions[r], second, self.config)
            if size > base:
                per_region[r], found[r] = second, merged
                changed = True
            elif len(merged.boxes) >= gain * max(len(found[r].boxes), 1):
                alternatives[r] = merged
        if first_outside is not None:
            if photo > base and outside:
                again = self.uncovered_slices(regions, width, height, photo)
                outside = self.detect_slices(rgb, again, batched=batched)
                n_slices += len(again)
                changed = True
            every = [res for r in per_region for res in r] + outside
            found.append(
                unassigned_detections(regions, every, self.config) if changed else first_outside
            )
        return SlicedResult(found, alternatives, n_slices)
