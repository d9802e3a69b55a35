"""Procedural textures (numpy + Pillow): value noise, backgrounds, lighting."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

F32 = NDArray[np.float32]


def resize_f32(arr: F32, width: int, height: int, smooth: bool = True) -> F32:
    """Resize a 2-D float32 array with Pillow (bicubic, or nearest when not ``smooth``)."""
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    method = Image.Resampling.BICUBIC if smooth else Image.Resampling.NEAREST
    return np.asarray(img.resize((width, height), method), dtype=np.float32)


def value_noise(
    rng: np.random.Generator, height: int, width: int, cell: float, octaves: int = 3
) -> F32:
    """Smooth multi-octave noise of roughly zero mean and unit-ish amplitude.

    ``cell`` is the feature size (px) of the coarsest octave; each octave halves it.
    """
    out = np.zeros((height, width), dtype=np.float32)
    amp = 1.0
    total = 0.0
    size = max(cell, 2.0)
    for _ in range(octaves):
        gh = max(2, int(np.ceil(height / size)) + 2)
        gw = max(2, int(np.ceil(width / size)) + 2)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        # Resize a slightly larger grid and crop at a random offset: no alignment artefacts.
        big_w = round(gw * size)
        big_h = round(gh * size)
        up = resize_f32(grid, max(big_w, width), max(big_h, height))
        oy = int(rng.integers(0, up.shape[0] - height + 1))
        ox = int(rng.integers(0, up.shape[1] - width + 1))
        out += amp * up[oy : oy + height, ox : ox + width]
        total += amp
        amp *= 0.5
        size = max(size / 2.0, 2.0)
    out /= np.float32(total)
    return out


def grain(rng: np.random.Generator, height: int, width: int) -> F32:
    """Per-pixel noise, unit standard deviation."""
    return rng.standard_normal((height, width), dtype=np.float32)


def colorize(base: tuple[float, float, float], shade: F32) -> F32:
    """``H × W × 3`` image: ``base`` colour (0..1) scaled by ``shade`` (≈1)."""
    rgb = np.asarray(base, dtype=np.float32)
    return shade[:, :, None] * rgb[None, None, :]


def soil(rng: np.random.Generator, height: int, width: int, scale: float) -> F32:
    """Brown soil / peat with clumps, grain and a few pebbles."""
    hue = rng.uniform(0.0, 1.0)
    dark = rng.uniform(0.18, 0.42)
    base = (
        dark * rng.uniform(1.15, 1.45),
        dark * rng.uniform(0.85, 1.05),
        dark * rng.uniform(0.55, 0.8) * (0.9 + 0.2 * hue),
    )
    shade = (
        1.0
        + 0.22 * value_noise(rng, height, width, 90 * scale, 3)
        + 0.10 * value_noise(rng, height, width, 8 * scale, 2)
        + 0.07 * grain(rng, height, width)
    )
    return colorize(base, shade.astype(np.float32))


def bench(rng: np.random.Generator, height: int, width: int, scale: float) -> F32:
    """A bench: concrete, wooden planks, or black ground-cover fabric."""
    kind = int(rng.integers(0, 3))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # concrete
        g = rng.uniform(0.45, 0.7)
        base = (g, g * rng.uniform(0.96, 1.02), g * rng.uniform(0.9, 1.0))
        shade = (
            1.0
            + 0.12 * value_noise(rng, height, width, 160 * scale, 3)
            + 0.06 * grain(rng, height, width)
        )
    elif kind == 1:  # planks, along x or y
        g = rng.uniform(0.35, 0.6)
        base = (g * 1.25, g * 0.95, g * 0.65)
        plank = rng.uniform(90, 180) * scale
        coord = ys if rng.random() < 0.5 else xs
        seams = np.abs(((coord / plank) % 1.0) - 0.5) > 0.49
        streaks = value_noise(rng, height, width, 12 * scale, 2)
        shade = 1.0 + 0.15 * streaks + 0.05 * grain(rng, height, width) - 0.45 * seams
    else:  # woven ground cover
        g = rng.uniform(0.08, 0.16)
        base = (g, g * 1.03, g * 1.05)
        period = rng.uniform(5, 9) * scale
        weave = np.sin(xs * (2 * np.pi / period)) * np.sin(ys * (2 * np.pi / period))
        stripe = (np.abs(((ys / (rng.uniform(250, 400) * scale)) % 1.0) - 0.5) > 0.495) * 1.5
        shade = (
            1.0
            + 0.25 * weave
            + 0.2 * value_noise(rng, height, width, 120 * scale, 2)
            + 0.1 * grain(rng, height, width)
            + stripe
        )
    return colorize(base, np.asarray(shade, dtype=np.float32))


def lighting(rng: np.random.Generator, height: int, width: int, strength: float) -> F32:
    """Multiplicative lighting field: linear gradient, vignette, soft cast shadows."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs = xs / max(width - 1, 1) - 0.5
    ys = ys / max(height - 1, 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(angle) * xs + np.sin(angle) * ys) * rng.uniform(0.1, 0.55) * strength
    vignette = (xs**2 + ys**2) * rng.uniform(0.0, 0.7) * strength
    field = 1.0 + grad - vignette
    if rng.random() < 0.4:
        shadows = value_noise(rng, height, width, max(width, height) / 3.0, 1)
        edge = np.clip((shadows - rng.uniform(0.2, 0.6)) * 5.0, 0.0, 1.0)
        field = field * (1.0 - rng.uniform(0.15, 0.4) * edge)
    return np.asarray(field, dtype=np.float32)
