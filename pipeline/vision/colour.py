"""Is there enough colour in a photo to count plants? A pure, cheap check on a subsample.

The models and the band estimation tell plants from soil largely by colour (green against
brown). A grayscale photo, or one under a heavy colour cast (sodium light, a strong filter,
a broken white balance), still decodes and still gets counted, but the counts drop a lot
(the bundled sample: 522 in colour, 146 in grayscale). :func:`colour_warning` says so in one
sentence, which the analysis puts in the photo's ``warnings``.

Two measures on an RGB subsample of at most ~256 px per side:

- **chroma** (max − min of R, G, B per pixel, 0..255): its 95th percentile is under
  ``min_chroma_p95`` when the photo has almost no colour (grayscale or nearly);
- **hue concentration** (length of the chroma-weighted mean of the pixels' hue angles, 0..1,
  over pixels with some chroma): at least ``max_hue_concentration`` when one hue dominates
  the whole photo (a colour cast). A colour photo of the sample scores ~0.84, a sepia one 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SAMPLE_SIDE = 256


@dataclass(frozen=True)
class ColourStats:
    chroma_p95: float
    hue_concentration: float
    coloured_fraction: float


def subsample(rgb: NDArray[np.uint8], side: int = SAMPLE_SIDE) -> NDArray[np.float32]:
    """Every n-th pixel so that the longest side is about ``side`` (no copy of the photo)."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an H×W×3 RGB array, got shape {rgb.shape}")
    step = max(1, int(np.ceil(max(rgb.shape[0], rgb.shape[1]) / side)))
    return np.asarray(rgb[::step, ::step, :3], dtype=np.float32)


def colour_stats(rgb: NDArray[np.uint8], *, chroma_floor: float = 10.0) -> ColourStats:
    """Chroma percentile and hue concentration of ``rgb`` (H×W×3, uint8)."""
    a = subsample(rgb)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    chroma = a.max(axis=2) - a.min(axis=2)
    coloured = chroma > chroma_floor
    if not coloured.any():
        return ColourStats(float(np.percentile(chroma, 95)), 1.0, 0.0)
    # Hue angle of each pixel on the RGB colour hexagon, weighted by its chroma.
    x = (r - (g + b) / 2.0)[coloured]
    y = (np.sqrt(3.0) / 2.0 * (g - b))[coloured]
    angle = np.arctan2(y, x)
    weight = chroma[coloured]
    mean_x = float((weight * np.cos(angle)).sum() / weight.sum())
    mean_y = float((weight * np.sin(angle)).sum() / weight.sum())
    return ColourStats(
        chroma_p95=float(np.percentile(chroma, 95)),
        hue_concentration=float(np.hypot(mean_x, mean_y)),
        coloured_fraction=float(coloured.mean()),
    )


def colour_warning(
    rgb: NDArray[np.uint8],
    *,
    min_chroma_p95: float = 20.0,
    max_hue_concentration: float = 0.965,
) -> str | None:
    """One sentence when ``rgb`` has too little colour for reliable counts, else None."""
    stats = colour_stats(rgb)
    if stats.chroma_p95 < min_chroma_p95:
        return (
            "the photo has almost no colour (grayscale or nearly: 95th-percentile chroma "
            f"{stats.chroma_p95:.0f}/255); plants are told from soil by colour, so the counts "
            "may be unreliable: send a colour photo"
        )
    if stats.hue_concentration >= max_hue_concentration:
        return (
            "the photo has a heavy colour cast (one hue dominates: concentration "
            f"{stats.hue_concentration:.2f}); plants are told from soil by colour, so the "
            "counts may be unreliable: correct the white balance or send an unfiltered photo"
        )
    return None
