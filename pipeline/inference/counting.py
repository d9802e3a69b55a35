"""A photo's merged detections as ``Detection`` models, and band estimation per region.

``detections_of`` turns each owner's merged boxes (a segment index, or None for detections
outside every segment) into ``Detection`` models. ``estimate_regions`` runs band estimation
per segment in segment-local coordinates (the bbox crop, its mask, boxes shifted to the
crop); with ``plant_area_fallback``, a band with too few detections to calibrate uses the
plant area calibrated on the segment's detections, else on the photo's, and only then
``default_plant_area_px`` (2500 px² made phantom plants of 11 000-px² ones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from pipeline.inference.colours import PhotoColours
from pipeline.inference.regions import class_name
from pipeline.inference.slicing import Region, RegionDetections
from pipeline.inference.yolo import BoolArray, FloatArray
from pipeline.vision.bands import BandParams, calibrated_plant_area, estimate_segment_and_mask
from pipeline.vision.types import Detection, SegmentEstimation

__all__ = ["detections_of", "estimate_regions", "plant_area", "weigh_alternatives"]


def plant_area(boxes: Sequence[FloatArray], params: BandParams) -> float | None:
    """The calibrated plant area (IQR-filtered mean box area) of these detections, or None
    when they are too few to calibrate (see ``calibrated_plant_area``)."""
    b = np.concatenate([np.asarray(x, np.float64).reshape(-1, 4) for x in boxes], axis=0)
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    area, calibrated = calibrated_plant_area(areas, params)
    return area if calibrated else None


def detections_of(
    owners: Sequence[tuple[int | None, RegionDetections]], names: Sequence[str]
) -> list[Detection]:
    """``Detection`` models of every owner's boxes (photo pixels), owner as segment index."""
    detections: list[Detection] = []
    for owner, found in owners:
        for box, score, cls in zip(found.boxes, found.scores, found.classes, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            detections.append(
                Detection(
                    cx=round((x1 + x2) / 2, 2),
                    cy=round((y1 + y2) / 2, 2),
                    w=round(x2 - x1, 2),
                    h=round(y2 - y1, 2),
                    confidence=round(float(score), 4),
                    class_id=int(cls),
                    class_name=class_name(names, int(cls)),
                    segment_index=owner,
                )
            )
    return detections


def estimate_regions(
    rgb: NDArray[np.uint8],
    regions: Sequence[Region],
    per_region: Sequence[RegionDetections],
    photo_boxes: Sequence[FloatArray],
    params: BandParams,
    *,
    fallback: bool,
    colours: PhotoColours | None = None,
) -> tuple[list[SegmentEstimation], list[tuple[int, int, BoolArray]]]:
    """Band estimation of every region: its estimation and its counted vegetation mask
    (crop origin and crop-local mask). ``photo_boxes``: every detection of the photo, for
    the photo's plant area; ``fallback``: ``plant_area_fallback``; ``colours``: the plant
    colours learned from the detections (by segment index), else the fixed colour rule."""
    estimations: list[SegmentEstimation] = []
    counted: list[tuple[int, int, BoolArray]] = []
    photo_area = plant_area(photo_boxes, params) if fallback else None
    for region, found in zip(regions, per_region, strict=True):
        crop = rgb[region.y0 : region.y0 + region.height, region.x0 : region.x0 + region.width]
        local = found.boxes.copy()
        local[:, [0, 2]] -= region.x0
        local[:, [1, 3]] -= region.y0
        region_params = params
        if fallback:
            # a band with too few detections of its own falls back to the plant area
            # measured on the segment's detections, else the photo's, before the default
            area = plant_area([found.boxes], params) or photo_area
            if area is not None:
                region_params = dataclasses.replace(params, default_plant_area_px=area)
        plants = None
        if colours is not None:
            plants = colours.vegetation(region.segment_index, crop, region.mask)
        estimation, vegetation = estimate_segment_and_mask(
            crop, region.mask, local, region.segment_index, region_params, plants
        )
        estimations.append(estimation)
        counted.append((region.x0, region.y0, vegetation))
    return estimations, counted


def weigh_alternatives(
    rgb: NDArray[np.uint8],
    regions: Sequence[Region],
    per_region: list[RegionDetections],
    alternatives: Mapping[int, RegionDetections],
    estimated: tuple[list[SegmentEstimation], list[tuple[int, int, BoolArray]]],
    photo_boxes: Sequence[FloatArray],
    params: BandParams,
    *,
    fallback: bool,
    colours: PhotoColours | None = None,
) -> None:
    """For each region with an alternative detection pass, keep the pass that counts more
    plants, detected + estimated (a pass that misses plants leaves their vegetation to the
    estimate; one whose boxes only cover that vegetation counts no more). Updates
    ``per_region`` and ``estimated`` (estimations, counted vegetation) in place."""
    estimations, counted = estimated
    for r, alternative in alternatives.items():
        est, veg = estimate_regions(
            rgb,
            [regions[r]],
            [alternative],
            photo_boxes,
            params,
            fallback=fallback,
            colours=colours,
        )
        now = len(per_region[r].boxes) + estimations[r].estimated
        if len(alternative.boxes) + est[0].estimated > now:
            per_region[r] = alternative
            estimations[r], counted[r] = est[0], veg[0]
