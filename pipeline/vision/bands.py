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
   (:func:`floor_mask`); what is left is vegetation;
5. fringes — vegetation blobs smaller than ``min_component_fraction`` × the band's plant
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
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from pipeline.vision import kernels
from pipeline.vision.types import BandEstimate, SegmentEstimation

__all__ = [
    "BandParams",
    "band_rows",
    "calibrated_plant_area",
    "counted_vegetation",
    "detection_mask",
    "estimate_segment",
    "estimate_segment_and_mask",
    "floor_mask",
    "otsu_threshold",
    "rgb_to_hsv",
    "rgb_to_lab",
    "vegetation_mask",
    "warmup",
]

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float32]

_SQUARE = np.ones((3, 3), dtype=bool)

# numba's fallback threading layer ("workqueue") aborts the process when two threads launch
# parallel kernels at once; one band estimation at a time per process (each already uses
# every core) keeps any layer safe.
_KERNELS = threading.RLock()


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

    def __post_init__(self) -> None:
        if self.bands < 1:
            raise ValueError(f"bands must be >= 1, got {self.bands}")
        if self.default_plant_area_px <= 0:
            raise ValueError("default_plant_area_px must be > 0")
        if self.plant_area_factor <= 0:
            raise ValueError("plant_area_factor must be > 0")
        if self.min_component_fraction < 0:
            raise ValueError("min_component_fraction must be >= 0")


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
    with _KERNELS:
        kernels.draw_discs(canvas, discs)
        if params.blur_sigma > 0:
            blurred: BoolArray = kernels.blur_threshold(
                canvas, params.blur_sigma, params.mask_threshold
            )
            return blurred
    mask: BoolArray = canvas >= params.mask_threshold
    return mask


# ------------------------------------------------------------------- colour spaces


def _srgb_linear(rgb: NDArray[np.uint8]) -> FloatArray:
    c = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    linear: FloatArray = np.where(
        c <= 0.04045, c / np.float32(12.92), ((c + np.float32(0.055)) / np.float32(1.055)) ** 2.4
    ).astype(np.float32)
    return linear


def _lab_f(t: FloatArray) -> FloatArray:
    delta = 6.0 / 29.0
    out: FloatArray = np.where(
        t > delta**3, np.cbrt(t), t / (3.0 * delta * delta) + 4.0 / 29.0
    ).astype(np.float32)
    return out


# sRGB (D65) -> CIE XYZ
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=np.float32,
)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def rgb_to_lab(rgb: NDArray[np.uint8]) -> FloatArray:
    """CIELAB (D65) of sRGB ``uint8`` pixels: ``(..., 3)`` float32 with L* in 0..100."""
    xyz = _srgb_linear(rgb) @ _RGB_TO_XYZ.T / _WHITE_D65
    f = _lab_f(xyz.astype(np.float32))
    lab = np.empty(f.shape, dtype=np.float32)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def lab_lightness(rgb: NDArray[np.uint8]) -> FloatArray:
    """L* (0..100) alone: the same as ``rgb_to_lab(rgb)[..., 0]``, cheaper."""
    y = _srgb_linear(rgb) @ _RGB_TO_XYZ[1]
    lightness: FloatArray = (116.0 * _lab_f(y.astype(np.float32)) - 16.0).astype(np.float32)
    return lightness


def _luminance_lut() -> FloatArray:
    """``(3, 256)``: each 8-bit channel value's linear-light share of the luminance Y."""
    levels = np.arange(256, dtype=np.uint8)
    lut: FloatArray = (_srgb_linear(levels)[None, :] * _RGB_TO_XYZ[1][:, None]).astype(np.float32)
    return np.ascontiguousarray(lut)


_LUMINANCE_LUT = _luminance_lut()
_LIGHTNESS_LUT = kernels.lightness_table()


def rgb_to_hsv(rgb: NDArray[np.uint8]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Hue in degrees [0, 360) (0 for greys), saturation and value in [0, 1]."""
    c = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    v = c.max(axis=-1)
    delta = v - c.min(axis=-1)
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    safe = np.where(delta > 0, delta, np.float32(1.0))
    hue = np.where(
        v == r,
        np.mod((g - b) / safe, 6.0),
        np.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = np.where(delta > 0, hue * 60.0, 0.0).astype(np.float32)
    return hue, s.astype(np.float32), v.astype(np.float32)


# ------------------------------------------------------------------------- Otsu


def _otsu(values: NDArray[Any], bins: int = 256) -> tuple[float, float, float, float]:
    """Otsu's split of a 1-D sample: (threshold, separability η, mean below, mean above).

    η = between-class variance / total variance, in [0, 1]; 0 for a constant sample.
    Values ``< threshold`` are the dark class.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-9:
        return lo, 0.0, lo, lo
    hist, _ = np.histogram(v, bins=bins, range=(lo, hi))
    return _otsu_split(hist, lo, hi, float(v.var()))


def _otsu_split(
    hist: NDArray[np.int64], lo: float, hi: float, total_var: float
) -> tuple[float, float, float, float]:
    """Otsu's split from a histogram of ``len(hist)`` equal bins over ``[lo, hi]`` and the
    sample's variance: (threshold, η, mean below, mean above), as :func:`_otsu`."""
    if hi - lo < 1e-9:
        return lo, 0.0, lo, lo
    bins = hist.shape[0]
    edges = np.linspace(lo, hi, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2.0
    p = hist.astype(np.float64) / float(hist.sum())
    w0 = np.cumsum(p)
    w1 = 1.0 - w0
    m = np.cumsum(p * centres)
    mean_total = m[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_total * w0 - m) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0.0
    between[-1] = 0.0
    k = int(np.argmax(between))
    threshold = float(edges[k + 1])
    eta = float(between[k] / total_var) if total_var > 0 else 0.0
    mean0 = float(m[k] / w0[k]) if w0[k] > 0 else lo
    mean1 = float((mean_total - m[k]) / w1[k]) if w1[k] > 0 else hi
    return threshold, min(1.0, eta), mean0, mean1


def otsu_threshold(values: NDArray[Any], bins: int = 256) -> float:
    """Otsu's threshold of a sample (maximises the between-class variance of a
    ``bins``-bin histogram); values ``< threshold`` are the dark class."""
    return _otsu(values, bins)[0]


# ---------------------------------------------------------------- floor / vegetation

# Vegetation rule thresholds (see vegetation_mask).
_HUE_GREEN = (55.0, 185.0)  # degrees: yellow-green … green … blue-green
_MIN_SAT = 0.15
_MIN_VAL = 0.18  # below: too dark to be anything but substrate/shadow
_MIN_EXG = 20.0  # excess green 2G − R − B, 0..510 scale
_STRONG_SAT = 0.35
_STRONG_EXG = 50.0
_OTSU_MIN_ETA = 0.5
_OTSU_MIN_GAP = 10.0  # L* units between the two class means


def vegetation_mask(crop_rgb: NDArray[np.uint8], within: NDArray[Any] | None = None) -> BoolArray:
    """True where a pixel of the crop is plant (the complement of :func:`floor_mask`).

    Rule, per pixel (HSV hue in degrees, saturation S and value V in 0..1, excess green
    ExG = 2G − R − B on 0..255 channels, L* = CIELAB lightness):

    1. green-ish: hue in 55°–185°, S ≥ 0.15 and ExG ≥ 20. Anything else is floor: brown
       soil, peat and sand (hue below ~55°), grey benches and tray plastic (S ≈ 0), white
       or blue objects.
    2. not dark soil: V ≥ 0.18. Black substrate and deep shadow are floor whatever their
       faint tint.
    3. Otsu on L*: L* is split with Otsu's threshold over the pixels of ``within`` (the
       segment; the whole crop if ``None``). When the split is real (separability η ≥ 0.5
       and class means ≥ 10 L* apart), pixels of the dark class count as vegetation only if
       strongly green (S ≥ 0.35 and ExG ≥ 50): a dull green cast on dark wet substrate
       (algae, moss) is floor, dark green foliage is not. A flat histogram (e.g. a crop
       that is all foliage) applies no Otsu split.
    4. a 3×3 binary opening of the result removes isolated pixels and one-pixel lines.

    So green plants on brown soil, black substrate or a grey bench are vegetation, and
    the soil, substrate and bench are not; plants brighter or darker than the floor both
    work because the Otsu class only tightens the colour test, it never replaces it.
    """
    rgb = np.asarray(crop_rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"crop_rgb must be (H, W, 3), got {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"crop_rgb must be uint8, got {rgb.dtype}")
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=bool)
    region = np.ones((h, w), dtype=bool) if within is None else np.asarray(within) != 0
    if region.shape != (h, w):
        raise ValueError(f"within has shape {region.shape}, the crop is {(h, w)}")
    # One compiled pass gives every pixel its colour code (rules 1-2, and the "strongly
    # green" test of rule 3) and its L*; see pipeline.vision.kernels.
    code = np.empty((h, w), dtype=np.uint8)
    lightness = np.empty((h, w), dtype=np.float32)
    with _KERNELS:
        kernels.classify_colours(
            np.ascontiguousarray(rgb), _LUMINANCE_LUT, _LIGHTNESS_LUT, code, lightness
        )
        veg: BoolArray = (code & kernels.VEG) != 0
        if veg.any():
            hist, lo, hi, n, _, var = kernels.lightness_histogram(lightness, region, 256)
            if n > 0:
                threshold, eta, mean_dark, mean_bright = _otsu_split(hist, lo, hi, var)
                if eta >= _OTSU_MIN_ETA and mean_bright - mean_dark >= _OTSU_MIN_GAP:
                    veg = kernels.otsu_filter(code, lightness, threshold)
        return kernels.open3x3(veg)


def floor_mask(crop_rgb: NDArray[np.uint8], within: NDArray[Any] | None = None) -> BoolArray:
    """True where the pixel is floor (soil, substrate, bench, tray), not vegetation.

    The exact complement of :func:`vegetation_mask`; see there for the rule. ``within``
    (the segment mask, same shape) restricts the pixels the Otsu split is computed from.
    """
    return ~vegetation_mask(crop_rgb, within)


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
) -> tuple[SegmentEstimation, BoolArray]:
    rgb, seg = _check_inputs(crop_rgb, segment_mask)
    h, w = seg.shape
    boxes = _as_boxes(boxes_local)
    residual = seg & ~detection_mask((h, w), boxes, params)
    vegetation = residual & vegetation_mask(rgb, within=seg)
    counted = np.zeros((h, w), dtype=bool)
    residual_rows = np.count_nonzero(residual, axis=1)
    vegetation_rows = np.count_nonzero(vegetation, axis=1)

    # Connected components only where there is vegetation: its bounding box (undetected
    # vegetation is usually a small part of the crop).
    labels: NDArray[np.int32] | None = None
    sizes = np.zeros(1, dtype=np.int64)
    top = left = 0
    if params.min_component_fraction > 0 and vegetation_rows.any():
        ys = np.flatnonzero(vegetation_rows)
        xs = np.flatnonzero(vegetation.any(axis=0))
        top, bottom, left, right = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
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
            vegetation_px = veg_all
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
) -> tuple[SegmentEstimation, BoolArray]:
    """:func:`estimate_segment` and, from the same pass, the crop-local pixels it counted
    as undetected vegetation (:func:`counted_vegetation`)."""
    return _run(crop_rgb, segment_mask, boxes_local, segment_index, params)


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
