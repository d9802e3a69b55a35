"""Slice size chosen from the measured plant size, so plants reach the detector in its range.

The detector sees every slice letterboxed to its input side (512 px): a slice of ``s`` photo
pixels scales plants by ``512 / s``. It was trained on plants of ~11–230 px in its input
(median longest side 35 px, 3 % at 100 px or more; pipeline/models/README_MODELS.md). Plants
far larger than that come out as several leaf-cluster boxes (one 135-px plant, three
counts); plants far smaller and packed in a dense bed are missed or joined.

A first detection pass at the configured slice size measures the plants (median longest box
side of a region's detections); :func:`choose_slice_size` then says which slice size brings
that median into ``[min_px, max_px]`` of the detector input, landing on ``small_target_px``
or ``large_target_px``. Regions whose plants already lie in range keep the first pass; the
others are detected again at the chosen size (larger slices, resized down, are cheaper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class ScaleRule:
    """When and how far to rescale slices (sizes in detector-input pixels at ``slice_size``).

    ``min_px``/``max_px``: the median plant side kept as it is; below ``min_px`` the slices
    shrink (plants enlarged) so the median becomes ``small_target_px``, above ``max_px`` they
    grow (plants reduced) to ``large_target_px``. ``min_detections``: fewer measured plants
    say nothing. ``min_factor``/``max_factor`` bound the new slice size as a multiple of
    ``slice_size``.
    """

    min_px: float = 26.0
    max_px: float = 80.0
    small_target_px: float = 30.0
    large_target_px: float = 60.0
    min_detections: int = 8
    min_factor: float = 0.5
    max_factor: float = 4.0


def longest_sides(boxes: NDArray[np.floating]) -> NDArray[np.float64]:
    """The longer side of each ``x1, y1, x2, y2`` box."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sides: NDArray[np.float64] = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    return sides


def choose_slice_size(
    sides: NDArray[np.floating], slice_size: int, input_size: int, rule: ScaleRule
) -> int | None:
    """The slice side (photo pixels) for plants of these measured longest sides (photo pixels).

    ``slice_size`` is the side the sides were measured at, ``input_size`` the detector's input
    side. Returns ``slice_size`` itself when the median plant, as the detector saw it, lies in
    ``[rule.min_px, rule.max_px]``; None when fewer than ``rule.min_detections`` were
    measured (too few to tell).
    """
    values = np.asarray(sides, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size < max(rule.min_detections, 1):
        return None
    seen = float(np.median(values)) * input_size / slice_size  # in the detector input
    if rule.min_px <= seen <= rule.max_px:
        return slice_size
    target = rule.small_target_px if seen < rule.min_px else rule.large_target_px
    factor = min(max(seen / target, rule.min_factor), rule.max_factor)
    return max(16, round(slice_size * factor))
