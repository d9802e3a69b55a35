"""Segmentation instances → one ``Segment`` and one detection ``Region`` per container.

Instances are resolved first (``resolve_segments``): masks overlapping by
``segment_merge_overlap`` of the smaller one are united (class and score of the best), and
the pixels of touching containers go to the better-scored one, so every pixel belongs to at
most one segment. **No segment found** → the whole photo becomes one segment (class
``"segment"``, confidence 0.0 marking it as synthesised, full mask, the photo rectangle as
polygon), so plants are still detected and estimated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pipeline.inference.config import InferenceConfig
from pipeline.inference.slicing import Region
from pipeline.inference.yolo import SegInstance
from pipeline.vision.contours import mask_polygon
from pipeline.vision.segments import MaskInstance, ResolvedSegment, resolve_segments
from pipeline.vision.types import ContainerType, Segment

WHOLE_PHOTO_CLASS = "segment"

__all__ = ["WHOLE_PHOTO_CLASS", "class_name", "segments_and_regions"]


def class_name(names: Sequence[str], class_id: int) -> str:
    """The model's name of ``class_id``, or ``class<id>`` when it has none."""
    return names[class_id] if 0 <= class_id < len(names) else f"class{class_id}"


def _resolved(masks: Sequence[MaskInstance], threshold: float | None) -> list[ResolvedSegment]:
    if threshold is None:  # the original pipeline's: every instance a segment of its own
        return [
            ResolvedSegment(k, (k,), m.score, m.class_id, m.x0, m.y0, m.mask, False)
            for k, m in enumerate(masks)
            if m.mask.any()
        ]
    return resolve_segments(masks, threshold=threshold)


def _whole_photo(width: int, height: int) -> tuple[Segment, Region]:
    w, h = float(width), float(height)
    segment = Segment(
        index=0,
        class_name=WHOLE_PHOTO_CLASS,
        container_type="segment",
        confidence=0.0,
        bbox=(0.0, 0.0, w, h),
        polygon=[(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)],
        area_px=width * height,
    )
    return segment, Region(0, 0, 0, np.ones((height, width), dtype=bool))


def segments_and_regions(
    instances: Sequence[SegInstance],
    names: Sequence[str],
    container_type: Callable[[str], ContainerType],
    config: InferenceConfig,
    width: int,
    height: int,
) -> tuple[list[Segment], list[Region]]:
    """``Segment`` models and detection regions, one per container (overlapping instances
    resolved, pixels exclusive); the whole photo if nothing was found.

    ``names`` are the segmentation model's class names, ``container_type`` maps one to its
    container type. Each region's detection box is its crop grown by ``segment_crop_pad`` of
    the photo's longer side.
    """
    segments: list[Segment] = []
    regions: list[Region] = []
    masks = [MaskInstance(i.score, i.class_id, i.origin_x, i.origin_y, i.mask) for i in instances]
    pad = round(config.segment_crop_pad * max(width, height))
    for res in _resolved(masks, config.segment_merge_overlap):
        inst = instances[res.source]
        index = len(segments)
        name = class_name(names, inst.class_id)
        if res.changed:
            h, w = res.mask.shape
            bbox = (float(res.x0), float(res.y0), float(res.x0 + w), float(res.y0 + h))
            polygon = mask_polygon(res.mask, res.x0, res.y0)
        else:
            # not rounded: floor/ceil of it must give the crop used here
            bbox, polygon = inst.box, inst.polygon
        segments.append(
            Segment(
                index=index,
                class_name=name,
                container_type=container_type(name),
                confidence=round(inst.score, 4),
                bbox=bbox,
                polygon=polygon,
                area_px=res.area_px,
            )
        )
        mh, mw = res.mask.shape
        det_box = (
            max(0, res.x0 - pad),
            max(0, res.y0 - pad),
            min(width, res.x0 + mw + pad),
            min(height, res.y0 + mh + pad),
        )
        regions.append(Region(index, res.x0, res.y0, res.mask, det_box if pad else None))
    if not segments:
        segment, region = _whole_photo(width, height)
        segments.append(segment)
        regions.append(region)
    return segments, regions
