"""Which pixels of a crop are plant and which are floor (soil, substrate, bench, tray).

:func:`vegetation_mask` classifies every pixel by colour (HSV hue/saturation/value, excess
green) in one compiled pass (``pipeline.vision.kernels``), tightened by an Otsu split of
CIELAB lightness over the segment; :func:`floor_mask` is its complement. The colour-space
conversions (:func:`rgb_to_lab`, :func:`rgb_to_hsv`) and :func:`otsu_threshold` are the
reference the compiled kernels follow. Pure: no I/O.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.vision import kernels

__all__ = [
    "KERNELS_LOCK",
    "floor_mask",
    "lab_lightness",
    "otsu_threshold",
    "rgb_to_hsv",
    "rgb_to_lab",
    "vegetation_mask",
]

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float32]

# numba's fallback threading layer ("workqueue") aborts the process when two threads launch
# parallel kernels at once; one band estimation at a time per process (each already uses
# every core) keeps any layer safe.
KERNELS_LOCK = threading.RLock()


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
    with KERNELS_LOCK:
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
