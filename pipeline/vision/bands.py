"""Band estimation: plants that detection missed, per segment, in segment-local pixels.

Everything here works on ONE segment's bounding-box crop: the crop of the photo, the
segment's mask cut to that same box, and the segment's detections shifted into the crop.
(The original pipeline squashed a full-image mask onto a crop and cut bands from the whole
image, so areas were in mixed units. Here every array has the crop's shape and every area
is a count of the photo's own pixels inside that crop.)

For one segment:

1. detection mask — a filled circle per detection (centre of the box, radius
   ``circle_scale`` × mean of its width and height), Gaussian-blurred and thresholded so
   circles of neighbouring plants fuse (:func:`detection_mask`);
2. residual — segment mask minus detection mask: where undetected plants could be;
3. the crop is cut into ``bands`` horizontal bands of equal height (rows of the crop:
   band ``i`` covers rows ``i·H//bands`` to ``(i+1)·H//bands``);
4. floor suppression — residual pixels that are floor (soil, substrate, bench) are dropped
   (:func:`pipeline.vision.vegetation.floor_mask`, or the caller's ``plants`` mask: colours
   learned from the detections, any foliage colour); what is left is vegetation;
5. thin structures and fringes — vegetation thinner than about ``thin_scale`` × the plant's
   side (:func:`thick_parts`: a green pot's rim, a green tray's walls, stems) and blobs
   smaller than ``min_component_fraction`` × the band's plant
   area (leaf tips reaching outside a detection's circle, specks) are not plants of their
   own and are not counted (``fringe_px``; 0 disables this step);
6. plant area — the IQR-filtered mean box area (w·h) of the band's detections when the band
   has at least ``min_calibration_detections`` of them, else ``default_plant_area_px``;
7. estimate = ceil(vegetation_px / (plant area × ``plant_area_factor``)), 0 without
   vegetation.

Per band: ``residual_px = floor_suppressed_px + fringe_px + vegetation_px``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from pipeline.vision import kernels
from pipeline.vision.tiling import mask_bounds
from pipeline.vision.types import BandEstimate, SegmentEstimation
from pipeline.vision.vegetation import KERNELS_LOCK, vegetation_mask

__all__ = [
    "BandParams",
    "band_rows",
    "calibrated_plant_area",
    "counted_vegetation",
    "detection_mask",
    "estimate_segment",
    "estimate_segment_and_mask",
    "warmup",
]

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float32]

_SQUARE = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class BandParams:
    """Tunables of band estimation (defaults are the original pipeline's)."""

    bands: int = 4
    default_plant_area_px: float = 2500.0
    min_calibration_detections: int = 10
    plant_area_factor: float = 0.9
    circle_scale: float = 0.5
    blur_sigma: float = 2.0
    mask_threshold: float = 0.5
    min_component_fraction: float = 0.2
    thin_scale: float = 0.12

    def __post_init__(self) -> None:
        if self.bands < 1:
            raise ValueError(f"bands must be >= 1, got {self.bands}")
        if self.default_plant_area_px <= 0:
            raise ValueError("default_plant_area_px must be > 0")
        if self.plant_area_factor <= 0:
            raise ValueError("plant_area_factor must be > 0")
        if self.min_component_fraction < 0:
            raise ValueError("min_component_fraction must be >= 0")
        if self.thin_scale < 0:
            raise ValueError("thin_scale must be >= 0")


# ----------------------------------------------------------------------- detection mask


def _as_boxes(boxes_local: NDArray[Any]) -> NDArray[np.float64]:
    b = np.asarray(boxes_local, dtype=np.float64)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {b.shape}")
    return b


def detection_mask(
    shape: tuple[int, int], boxes_local: NDArray[Any], params: BandParams
) -> BoolArray:
    """Pixels covered by the detections: a filled circle per box, blurred, thresholded.

    Circle: centre = centre of the box, radius = ``circle_scale`` × (w + h) / 2; a pixel is
    inside when its centre ``(col + 0.5, row + 0.5)`` is within the radius. The union is
    blurred with a Gaussian of ``blur_sigma`` (edges replicated, so circles cut by the crop
    border are not eroded there) and thresholded at ``mask_threshold``; ``blur_sigma <= 0``
    skips the blur.
    """
    h, w = int(shape[0]), int(shape[1])
    canvas = np.zeros((h, w), dtype=np.float32)
    if h == 0 or w == 0:
        return canvas.astype(bool)
    boxes = _as_boxes(boxes_local)
    discs = np.empty((boxes.shape[0], 3), dtype=np.float64)
    discs[:, 0] = (boxes[:, 0] + boxes[:, 2]) / 2.0
    discs[:, 1] = (boxes[:, 1] + boxes[:, 3]) / 2.0
    discs[:, 2] = params.circle_scale * ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1]))
    discs[:, 2] /= 2.0
    with KERNELS_LOCK:
        kernels.draw_discs(canvas, discs)
        if params.blur_sigma > 0:
            blurred: BoolArray = kernels.blur_threshold(
                canvas, params.blur_sigma, params.mask_threshold
            )
            return blurred
    mask: BoolArray = canvas >= params.mask_threshold
    return mask


# ------------------------------------------------------------------------ estimation


def band_rows(height: int, bands: int) -> list[tuple[int, int]]:
    """Row ranges ``(y0, y1)`` of ``bands`` equal horizontal bands over ``height`` rows
    (``y0 = i·height // bands``); they tile ``[0, height)`` exactly."""
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    edges = [(i * height) // bands for i in range(bands + 1)]
    return [(edges[i], edges[i + 1]) for i in range(bands)]


def calibrated_plant_area(areas: NDArray[Any], params: BandParams) -> tuple[float, bool]:
    """``(plant area, calibrated)`` from detection box areas.

    With at least ``min_calibration_detections`` areas: the mean of those within
    ``[Q1 − 1.5·IQR, Q3 + 1.5·IQR]`` (quartiles by linear interpolation). Otherwise, or
    if that mean is not positive, ``default_plant_area_px`` and ``False``.
    """
    a = np.asarray(areas, dtype=np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    if a.size < params.min_calibration_detections or a.size == 0:
        return float(params.default_plant_area_px), False
    q1, q3 = np.percentile(a, [25.0, 75.0])
    iqr = q3 - q1
    kept = a[(a >= q1 - 1.5 * iqr) & (a <= q3 + 1.5 * iqr)]
    mean = float(kept.mean()) if kept.size else 0.0
    if mean <= 0.0:
        return float(params.default_plant_area_px), False
    return mean, True


def _estimate(vegetation_px: int, plant_area: float, factor: float) -> int:
    if vegetation_px <= 0:
        return 0
    ratio = vegetation_px / (plant_area * factor)
    # Guard against 2.0000000000000004 → 3 from float rounding.
    return max(1, math.ceil(ratio - 1e-9))


def _check_inputs(
    crop_rgb: NDArray[Any], segment_mask: NDArray[Any]
) -> tuple[NDArray[np.uint8], BoolArray]:
    rgb = np.asarray(crop_rgb)
    mask = np.asarray(segment_mask)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"crop_rgb must be (H, W, 3), got {rgb.shape}")
    if mask.shape != rgb.shape[:2]:
        raise ValueError(
            f"crop {rgb.shape[:2]} and segment mask {mask.shape} differ: both must be the "
            "segment's bounding-box crop (segment-local pixels)"
        )
    if rgb.dtype != np.uint8:
        raise ValueError(f"crop_rgb must be uint8, got {rgb.dtype}")
    return rgb, mask.astype(bool, copy=False)


def _run(
    crop_rgb: NDArray[Any],
    segment_mask: NDArray[Any],
    boxes_local: NDArray[Any],
    segment_index: int,
    params: BandParams,
    plants: BoolArray | None = None,
) -> tuple[SegmentEstimation, BoolArray]:
    rgb, seg = _check_inputs(crop_rgb, segment_mask)
    h, w = seg.shape
    boxes = _as_boxes(boxes_local)
    residual = seg & ~detection_mask((h, w), boxes, params)
    if plants is not None and plants.shape != (h, w):
        raise ValueError(f"plants mask {plants.shape} and crop {(h, w)} differ")
    vegetation = residual & (vegetation_mask(rgb, within=seg) if plants is None else plants)
    counted = np.zeros((h, w), dtype=bool)
    residual_rows = np.count_nonzero(residual, axis=1)
    vegetation_rows = np.count_nonzero(vegetation, axis=1)
    vegetation = thick_parts(vegetation, params)  # pot rims, tray walls: not plants

    # Connected components only where there is vegetation: its bounding box (undetected
    # vegetation is usually a small part of the crop).
    labels: NDArray[np.int32] | None = None
    sizes = np.zeros(1, dtype=np.int64)
    top = left = 0
    bounds = mask_bounds(vegetation) if params.min_component_fraction > 0 else None
    if bounds is not None:
        left, top, right, bottom = bounds
        labels_raw, count = ndimage.label(vegetation[top:bottom, left:right], structure=_SQUARE)
        labels = np.asarray(labels_raw, dtype=np.int32)
        sizes = np.bincount(labels.ravel(), minlength=int(count) + 1)

    centres_y = (boxes[:, 1] + boxes[:, 3]) / 2.0
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    rows = band_rows(h, params.bands)
    inner_edges = np.asarray([y0 for y0, _ in rows[1:]], dtype=np.float64)
    band_of = np.searchsorted(inner_edges, centres_y, side="right")

    estimates: list[BandEstimate] = []
    for number, (y0, y1) in enumerate(rows):
        in_band = band_of == number
        plant_area, calibrated = calibrated_plant_area(areas[in_band], params)
        residual_px = int(residual_rows[y0:y1].sum())
        veg_all = int(vegetation_rows[y0:y1].sum())
        if labels is not None:
            big = sizes >= params.min_component_fraction * plant_area
            big[0] = False
            ya, yb = max(y0, top), min(y1, top + labels.shape[0])
            if ya < yb:
                keep = big[labels[ya - top : yb - top]]
                counted[ya:yb, left : left + labels.shape[1]] = keep
                vegetation_px = int(np.count_nonzero(keep))
            else:
                vegetation_px = 0
        else:
            counted[y0:y1] = vegetation[y0:y1]
            vegetation_px = int(np.count_nonzero(vegetation[y0:y1]))
        estimates.append(
            BandEstimate(
                band=number,
                y0=y0,
                y1=y1,
                detections=int(np.count_nonzero(in_band)),
                residual_px=residual_px,
                floor_suppressed_px=residual_px - veg_all,
                fringe_px=veg_all - vegetation_px,
                vegetation_px=vegetation_px,
                plant_area_px=round(plant_area, 2),
                calibrated=calibrated,
                estimated=_estimate(vegetation_px, plant_area, params.plant_area_factor),
            )
        )
    estimation = SegmentEstimation(
        segment_index=segment_index,
        bands=estimates,
        estimated=sum(b.estimated for b in estimates),
    )
    return estimation, counted


def thick_parts(vegetation: BoolArray, params: BandParams) -> BoolArray:
    """The vegetation without its thin structures: what survives an opening by a square of
    side 2r + 1 (r = ``thin_scale`` × √plant area, the plant area being
    ``default_plant_area_px``), grown back by r + 1 px inside the vegetation, so a compact
    plant keeps its whole outline while a ring (a green pot's rim) or a lattice (a green
    tray's walls) thinner than 2r + 1 px is dropped. ``thin_scale`` 0 keeps everything."""
    bounds = mask_bounds(vegetation) if params.thin_scale > 0 else None
    if bounds is None:
        return vegetation
    left, top, right, bottom = bounds
    r = max(1, round(params.thin_scale * math.sqrt(params.default_plant_area_px)))
    part = vegetation[top:bottom, left:right]
    # opening by a square of 2r + 1 then growing by r + 1 (a square of 2r + 3): the two
    # dilations make one by a square of 4r + 3
    grown = kernels.square_filter(
        kernels.square_filter(part, r, dilate=False), 2 * r + 1, dilate=True
    )
    out = np.zeros_like(vegetation)
    out[top:bottom, left:right] = grown & part
    return out


def estimate_segment(
    crop_rgb: NDArray[np.uint8],
    segment_mask: NDArray[Any],
    boxes_local: NDArray[Any],
    segment_index: int,
    params: BandParams,
) -> SegmentEstimation:
    """Band estimation of one segment (see the module docstring).

    ``crop_rgb`` ``(H, W, 3) uint8`` and ``segment_mask`` ``(H, W)`` are the segment's
    bounding-box crop; ``boxes_local`` ``(N, 4)`` xyxy are its detections in crop pixels.
    Each detection is counted in the band holding its centre row (centres above/below the
    crop count in the first/last band).
    """
    return _run(crop_rgb, segment_mask, boxes_local, segment_index, params)[0]


def estimate_segment_and_mask(
    crop_rgb: NDArray[np.uint8],
    segment_mask: NDArray[Any],
    boxes_local: NDArray[Any],
    segment_index: int,
    params: BandParams,
    plants: BoolArray | None = None,
) -> tuple[SegmentEstimation, BoolArray]:
    """:func:`estimate_segment` and, from the same pass, the crop-local pixels it counted
    as undetected vegetation (:func:`counted_vegetation`). ``plants``, when given, is the
    crop's vegetation (step 4) as the caller knows it (e.g. plant colours learned from the
    detections, ``pipeline.vision.plant_colours``) instead of the fixed colour rule."""
    return _run(crop_rgb, segment_mask, boxes_local, segment_index, params, plants)


def warmup() -> None:
    """Compile (or load from numba's cache) every kernel now, on a tiny crop, so the first
    photo of a process does not pay for it."""
    crop = np.zeros((24, 24, 3), dtype=np.uint8)
    crop[4:20, 4:20] = (40, 160, 40)
    estimate_segment(
        crop, np.ones((24, 24), dtype=bool), np.asarray([[6.0, 6.0, 14.0, 14.0]]), 0, BandParams()
    )


def counted_vegetation(
    crop_rgb: NDArray[np.uint8],
    segment_mask: NDArray[Any],
    boxes_local: NDArray[Any],
    params: BandParams,
) -> BoolArray:
    """The crop-local pixels :func:`estimate_segment` counts as undetected vegetation
    (per band, ``vegetation_px`` is this mask's count in the band's rows)."""
    return _run(crop_rgb, segment_mask, boxes_local, -1, params)[1]
