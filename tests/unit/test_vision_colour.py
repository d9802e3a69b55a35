"""Colour check: synthetic arrays and the bundled sample, in colour, grayscale and cast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.vision.colour import colour_stats, colour_warning, subsample

SAMPLE = Path(__file__).resolve().parents[2] / "pipeline" / "samples" / "nursery.jpg"


def nursery_like(seed: int = 0, h: int = 600, w: int = 800) -> np.ndarray:
    """Brown soil with green blobs: the two hues a nursery photo has."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (120, 85, 55)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(40):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(15, 40)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (60, 150, 50)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    lum = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(lum[..., None], 3, axis=2).astype(np.uint8)


def tint(rgb: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    lum = rgb.astype(np.float32).mean(axis=2, keepdims=True)
    return np.clip(lum * np.array(colour, np.float32), 0, 255).astype(np.uint8)


def test_colour_photo_has_no_warning() -> None:
    assert colour_warning(nursery_like()) is None


def test_grayscale_photo_warns_about_no_colour() -> None:
    warning = colour_warning(to_gray(nursery_like()))
    assert warning is not None and "almost no colour" in warning
    assert "unreliable" in warning


def test_nearly_grayscale_warns_but_mildly_desaturated_does_not() -> None:
    rgb = nursery_like().astype(np.float32)
    lum = rgb.mean(axis=2, keepdims=True)
    faint = (lum + 0.1 * (rgb - lum)).astype(np.uint8)
    mild = (lum + 0.6 * (rgb - lum)).astype(np.uint8)
    assert colour_warning(faint) is not None
    assert colour_warning(mild) is None


def test_sepia_cast_warns_about_a_colour_cast() -> None:
    warning = colour_warning(tint(nursery_like(), (1.07, 0.74, 0.43)))
    assert warning is not None and "colour cast" in warning


def test_gray_with_sensor_noise_still_counts_as_no_colour() -> None:
    rng = np.random.default_rng(3)
    noisy = np.clip(to_gray(nursery_like()) + rng.normal(0, 2, (600, 800, 3)), 0, 255)
    assert colour_warning(noisy.astype(np.uint8)) is not None


def test_stats_of_a_flat_image() -> None:
    flat = np.full((50, 70, 3), 128, np.uint8)
    stats = colour_stats(flat)
    assert stats.chroma_p95 == 0.0 and stats.coloured_fraction == 0.0


def test_subsample_bounds_the_work_and_rejects_non_rgb() -> None:
    big = np.zeros((3000, 4000, 3), np.uint8)
    assert max(subsample(big).shape[:2]) <= 256
    with pytest.raises(ValueError, match="RGB"):
        subsample(np.zeros((10, 10), np.uint8))


def test_bundled_sample_in_colour_grayscale_and_cast() -> None:
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    assert colour_warning(rgb) is None
    gray = np.asarray(Image.open(SAMPLE).convert("L").convert("RGB"))
    assert colour_warning(gray) is not None
    assert colour_warning(tint(rgb, (1.07, 0.74, 0.43))) is not None
