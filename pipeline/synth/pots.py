"""Loose pots standing on the ground (gravel, soil, concrete, fabric), some of them empty.

Pots are not containers of the segmentation classes: their plants lie outside every segment
and must still be counted. An empty pot (peat, no plant) is a hard negative for the detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from pipeline.synth import textures

F32 = NDArray[np.float32]

POT_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.06, 0.06, 0.065),  # black plastic
    (0.68, 0.36, 0.22),  # terracotta
    (0.45, 0.45, 0.46),  # grey
    (0.12, 0.30, 0.16),  # green plastic
    (0.85, 0.85, 0.83),  # white
)


@dataclass(frozen=True, slots=True)
class Pot:
    x: float
    y: float
    diameter: float
    planted: bool


def gravel(rng: np.random.Generator, height: int, width: int, scale: float) -> F32:
    """Grey-brown pebbles packed on darker fines."""
    g = float(rng.uniform(0.3, 0.5))
    base = textures.colorize(
        (g, g * 0.96, g * 0.9),
        np.asarray(
            1.0 + 0.08 * textures.value_noise(rng, height, width, 80 * scale, 2), np.float32
        ),
    )
    shade = Image.new("L", (width, height), 128)
    draw = ImageDraw.Draw(shade)
    size = float(rng.uniform(6, 14)) * scale
    n = int(width * height / max(size * size * 0.9, 1.0))
    xs = rng.uniform(0, width, n)
    ys = rng.uniform(0, height, n)
    rs = rng.uniform(0.35, 0.7, n) * size
    tones = rng.integers(90, 230, n)
    for x, y, r, t in zip(xs, ys, rs, tones, strict=True):
        draw.ellipse([x - r, y - r * 0.8, x + r, y + r * 0.8], fill=int(t))
    if scale > 0.6:
        shade = shade.filter(ImageFilter.GaussianBlur(radius=0.6 * scale))
    out: F32 = base * (np.asarray(shade, dtype=np.float32)[:, :, None] / 160.0)
    return out


def ground(rng: np.random.Generator, height: int, width: int, scale: float) -> F32:
    """What loose pots stand on: gravel, soil, concrete or ground-cover fabric."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return gravel(rng, height, width, scale)
    if kind == 1:
        return textures.soil(rng, height, width, scale)
    return textures.bench(rng, height, width, scale)


def place_pots(
    rng: np.random.Generator,
    width: int,
    height: int,
    diameter: float,
    empty_share: float,
    avoid: list[tuple[float, float, float, float]],
) -> list[Pot]:
    """Pots on a jittered grid (rows of pots as they stand on a bench), none overlapping,
    none in the boxes of ``avoid``; ``empty_share`` of them without a plant."""
    pitch = diameter * float(rng.uniform(1.05, 1.5))
    pots: list[Pot] = []
    for y in np.arange(pitch / 2, height, pitch):
        for x in np.arange(pitch / 2, width, pitch):
            if rng.random() < 0.15:  # a gap in the row
                continue
            px = float(x + rng.normal(0, 0.08 * pitch))
            py = float(y + rng.normal(0, 0.08 * pitch))
            d = diameter * float(rng.uniform(0.9, 1.1))
            if any(x0 - d < px < x1 + d and y0 - d < py < y1 + d for x0, y0, x1, y1 in avoid):
                continue
            pots.append(Pot(px, py, d, bool(rng.random() >= empty_share)))
    return pots


def draw_pot(
    img: F32,
    rng: np.random.Generator,
    pot: Pot,
    colour: tuple[float, float, float],
    peat: F32,
    light: tuple[float, float],
) -> None:
    """A round pot seen from above: drop shadow, rim (lit on one side), peat inside."""
    height, width = img.shape[:2]
    r = pot.diameter / 2
    x0, y0 = max(0, int(pot.x - r * 1.4) - 2), max(0, int(pot.y - r * 1.4) - 2)
    x1, y1 = min(width, int(pot.x + r * 1.4) + 3), min(height, int(pot.y + r * 1.4) + 3)
    if x1 <= x0 or y1 <= y0:
        return
    w, h = x1 - x0, y1 - y0
    cx, cy = pot.x - x0, pot.y - y0
    sdx, sdy = light[0] * pot.diameter * 0.8, light[1] * pot.diameter * 0.8
    shadow = Image.new("L", (w, h), 0)
    ImageDraw.Draw(shadow).ellipse(
        [cx - r + sdx, cy - r + sdy, cx + r + sdx, cy + r + sdy], fill=255
    )
    shadow = shadow.filter(ImageFilter.GaussianBlur(radius=max(1.0, r * 0.12)))
    region = img[y0:y1, x0:x1]
    region *= (1.0 - 0.45 * np.asarray(shadow, np.float32) / 255.0)[:, :, None]
    outer = Image.new("L", (w, h), 0)
    ImageDraw.Draw(outer).ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    rim = float(rng.uniform(0.07, 0.12)) * pot.diameter
    inner = Image.new("L", (w, h), 0)
    ImageDraw.Draw(inner).ellipse(
        [cx - r + rim, cy - r + rim, cx + r - rim, cy + r - rim], fill=255
    )
    om = np.asarray(outer, np.float32)[:, :, None] / 255.0
    im = np.asarray(inner, np.float32)[:, :, None] / 255.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # the rim is lit on the side facing the light, darker on the other
    facing = ((xs - cx) * -light[0] + (ys - cy) * -light[1]) / max(r, 1.0)
    lit = (1.0 + 0.6 * np.clip(facing, -1, 1))[:, :, None]
    rim_rgb = np.clip(np.asarray(colour, np.float32) * lit + 0.03, 0, 1)
    soil = peat[y0:y1, x0:x1] * np.float32(rng.uniform(0.55, 0.8))
    region[:] = region * (1 - om) + rim_rgb * om
    region[:] = region * (1 - im) + soil * im
