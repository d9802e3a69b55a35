"""Band estimation: plants that detection missed, per segment, in segment-local pixels.

For one segment (its bounding-box crop, its mask and its detections, all crop-local):

1. detection mask — a filled circle per detection (radius ``circle_scale`` × mean box side),
   Gaussian-blurred and thresholded so neighbouring circles fuse;
2. residual — segment mask minus detection mask: where undetected plants could be;
3. the crop is cut into ``bands`` horizontal bands of equal height (rows of the *crop*);
4. floor suppression — residual pixels that are floor are dropped (see :func:`floor_mask`);
5. fringes — vegetation blobs smaller than ``min_component_fraction`` × plant area (leaf
   tips outside a detection's circle) are not plants of their own and are dropped;
6. plant area — calibrated from the band's detections when there are at least
   ``min_calibration_detections`` (IQR-filtered mean of box areas), else the default;
7. estimate = ceil(vegetation area / (plant area × ``plant_area_factor``)).

Every area is in the same unit: pixels of the original photo, inside the segment's crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from pipeline.vision.types import BandEstimate, SegmentEstimation

BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class BandParams:
    bands: int = 4
    default_plant_area_px: float = 2500.0
    min_calibration_detections: int = 10
    plant_area_factor: float = 0.9
    circle_scale: float = 0.5
    blur_sigma: float = 2.0
    mask_threshold: float = 0.5
    min_component_fraction: float = 0.2


def detection_mask(
    shape: tuple[int, int], boxes_local: NDArray[np.floating], params: BandParams
) -> BoolArray:
    """Filled circle per detection box (x1, y1, x2, y2), blurred, thresholded."""
    h, w = shape
    canvas = np.zeros((h, w), dtype=np.float32)
    for x1, y1, x2, y2 in np.asarray(boxes_local, dtype=np.float64).reshape(-1, 4):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        r = params.circle_scale * ((x2 - x1) + (y2 - y1)) / 2
        if r <= 0:
            continue
        xa, xb = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
        ya, yb = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
        if xa >= xb or ya >= yb:
            continue
        yy, xx = np.mgrid[ya:yb, xa:xb]
        inside = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
        canvas[ya:yb, xa:xb][inside] = 1.0
    if params.blur_sigma > 0:
        canvas = ndimage.gaussian_filter(canvas, sigma=params.blur_sigma, mode="constant")
    return canvas >= params.mask_threshold


def _lab_lightness(rgb: NDArray[np.uint8]) -> NDArray[np.float64]:
    """CIELAB L* (0..100) of sRGB pixels (D65)."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126729, 0.7151522, 0.0721750])
    f = np.where(y > (6 / 29) ** 3, np.cbrt(y), y / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness: NDArray[np.float64] = 116.0 * f - 16.0
    return lightness


def _hsv(rgb: NDArray[np.uint8]) -> tuple[NDArray[np.float64], ...]:
    """Hue in degrees [0, 360), saturation and value in [0, 1]."""
    c = rgb.astype(np.float64) / 255.0
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    v = c.max(axis=-1)
    mn = c.min(axis=-1)
    delta = v - mn
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    safe = np.where(delta > 0, delta, 1.0)
    hue = np.where(
        v == r, ((g - b) / safe) % 6, np.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = np.where(delta > 0, hue * 60.0, 0.0)
    return hue, s, v


def otsu_threshold(values: NDArray[np.floating], bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (maximises between-class variance)."""
    if values.size == 0:
        return 0.0
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = hist.astype(np.float64)
    w0 = np.cumsum(weight)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weight * centres)
    mean0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def vegetation_mask(crop_rgb: NDArray[np.uint8], within: BoolArray | None = None) -> BoolArray:
    """True where a pixel is plant, not floor.

    Rule: a pixel is vegetation when it is green-like in HSV (hue 50°–190°, saturation ≥ 0.18,
    value ≥ 0.12), is not dark soil (value < 0.20), and is either in the bright class of an
    Otsu split of LAB lightness (computed over ``within``) or strongly green (saturation ≥ 0.35
    and green chromaticity ≥ 0.40). A 3×3 binary opening then removes isolated pixels.
    So brown or black substrate, grey benches and tray plastic are floor; foliage of any
    brightness is vegetation.
    """
    hue, sat, val = _hsv(crop_rgb)
    lightness = _lab_lightness(crop_rgb)
    region = within if within is not None else np.ones(crop_rgb.shape[:2], dtype=bool)
    threshold = otsu_threshold(lightness[region]) if region.any() else 0.0
    rgbf = crop_rgb.astype(np.float64)
    chroma_g = np.divide(rgbf[..., 1], rgbf.sum(axis=-1), out=np.zeros_like(val),
                         where=rgbf.sum(axis=-1) > 0)  # fmt: skip
    green_like = (hue >= 50) & (hue <= 190) & (sat >= 0.18) & (val >= 0.12)
    dark_soil = val < 0.20
    strongly_green = (sat >= 0.35) & (chroma_g >= 0.40)
    veg = green_like & ~dark_soil & ((lightness >= threshold) | strongly_green)
    opened: BoolArray = ndimage.binary_opening(veg, structure=np.ones((3, 3), dtype=bool))
    return opened


def floor_mask(crop_rgb: NDArray[np.uint8], within: BoolArray | None = None) -> BoolArray:
    """True where the pixel is floor (soil, substrate, bench), i.e. not vegetation."""
    return ~vegetation_mask(crop_rgb, within)


def calibrated_plant_area(areas: NDArray[np.floating], params: BandParams) -> tuple[float, bool]:
    """IQR-filtered mean detection area, when there are enough detections to trust it."""
    if areas.size < params.min_calibration_detections:
        return params.default_plant_area_px, False
    q1, q3 = np.percentile(areas, [25, 75])
    iqr = q3 - q1
    kept = areas[(areas >= q1 - 1.5 * iqr) & (areas <= q3 + 1.5 * iqr)]
    if kept.size == 0 or float(kept.mean()) <= 0:
        return params.default_plant_area_px, False
    return float(kept.mean()), True


def band_rows(height: int, bands: int) -> list[tuple[int, int]]:
    """Row ranges of ``bands`` equal horizontal bands covering ``height`` rows."""
    edges = np.linspace(0, height, bands + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(bands)]


def estimate_segment(
    crop_rgb: NDArray[np.uint8],
    segment_mask: BoolArray,
    boxes_local: NDArray[np.floating],
    segment_index: int,
    params: BandParams,
) -> SegmentEstimation:
    """Band estimation of one segment; see the module docstring."""
    if crop_rgb.shape[:2] != segment_mask.shape:
        raise ValueError(
            f"crop {crop_rgb.shape[:2]} and segment mask {segment_mask.shape} differ: both must "
            "be the segment's bounding-box crop"
        )
    h, w = segment_mask.shape
    boxes = np.asarray(boxes_local, dtype=np.float64).reshape(-1, 4)
    residual = segment_mask & ~detection_mask((h, w), boxes, params)
    vegetation = residual & vegetation_mask(crop_rgb, within=segment_mask)
    labels, count = ndimage.label(vegetation, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float64)
    sizes[0] = 0.0
    centres_y = (boxes[:, 1] + boxes[:, 3]) / 2
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    estimates: list[BandEstimate] = []
    for number, (y0, y1) in enumerate(band_rows(h, params.bands)):
        last = number == params.bands - 1
        in_band = (centres_y >= y0) & ((centres_y < y1) | (last & (centres_y <= y1)))
        residual_px = int(residual[y0:y1].sum())
        plant_area, calibrated = calibrated_plant_area(areas[in_band], params)
        band_labels = labels[y0:y1]
        big = sizes >= params.min_component_fraction * plant_area
        big[0] = False
        vegetation_all = int((band_labels > 0).sum())
        vegetation_px = int(big[band_labels].sum())
        estimated = (
            math.ceil(vegetation_px / (plant_area * params.plant_area_factor))
            if vegetation_px > 0
            else 0
        )
        estimates.append(
            BandEstimate(
                band=number,
                y0=y0,
                y1=y1,
                detections=int(in_band.sum()),
                residual_px=residual_px,
                floor_suppressed_px=residual_px - vegetation_all,
                fringe_px=vegetation_all - vegetation_px,
                vegetation_px=vegetation_px,
                plant_area_px=round(plant_area, 2),
                calibrated=calibrated,
                estimated=estimated,
            )
        )
    return SegmentEstimation(
        segment_index=segment_index,
        bands=estimates,
        estimated=sum(b.estimated for b in estimates),
    )
