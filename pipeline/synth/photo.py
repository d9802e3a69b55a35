"""How the condition scenes are photographed: light, shadows, white balance, focus, JPEG.

``photograph`` turns a linear scene (float RGB 0..1) into the uint8 photo: a lighting field
(gradient and vignette, optionally strong), a hard shadow band with a sharp edge (a greenhouse
beam or a person), a white-balance cast, exposure, gamma and sensor noise, then defocus (whole
photo, or growing towards one edge: depth of field of a photo taken at an angle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from pipeline.synth import textures

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Exposure:
    """How hard the light is on the scene (the condition scenes' ``lighting`` knob)."""

    gradient: float  # strength of the lighting field (1.0: the classic scenes' upper end)
    hard_shadow: float  # probability of a hard shadow band
    cast: float  # largest white-balance cast (share of a channel)
    defocus_px: float  # largest defocus blur radius at the reference width
    jpeg: tuple[int, int]  # JPEG quality range


MILD = Exposure(gradient=1.0, hard_shadow=0.1, cast=0.08, defocus_px=0.8, jpeg=(70, 96))
HARSH = Exposure(gradient=1.8, hard_shadow=0.7, cast=0.22, defocus_px=2.2, jpeg=(40, 90))


def hard_shadow(rng: np.random.Generator, height: int, width: int, scale: float) -> F32:
    """A multiplicative field with one sharp-edged shadow band across the photo."""
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    centre = (rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height)
    band = rng.uniform(0.08, 0.35) * min(width, height)
    reach = 2.0 * (width + height)
    pts = []
    for along, across in ((-reach, 0.0), (reach, 0.0), (reach, band), (-reach, band)):
        pts.append((centre[0] + along * c - across * s, centre[1] + along * s + across * c))
    m = Image.new("L", (width, height), 0)
    ImageDraw.Draw(m).polygon(pts, fill=255)
    m = m.filter(ImageFilter.GaussianBlur(radius=max(0.6, rng.uniform(0.5, 2.5) * scale)))
    depth = rng.uniform(0.35, 0.65)
    field: F32 = 1.0 - np.float32(depth) * np.asarray(m, np.float32) / np.float32(255.0)
    return field


def defocus(rng: np.random.Generator, img: U8, radius: float) -> U8:
    """Blur of ``radius`` px over the whole photo, or growing from 0 towards one edge."""
    if radius < 0.3:
        return img
    blurred = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)), np.uint8)
    if rng.random() < 0.5:
        return blurred
    h, w = img.shape[:2]
    ramp = np.linspace(0.0, 1.0, h if rng.random() < 0.7 else w, dtype=np.float32)
    if rng.random() < 0.5:
        ramp = ramp[::-1]
    weight = ramp[:, None, None] if ramp.shape[0] == h else ramp[None, :, None]
    mix = img.astype(np.float32) * (1 - weight) + blurred.astype(np.float32) * weight
    out: U8 = np.clip(mix + 0.5, 0, 255).astype(np.uint8)
    return out


def photograph(rng: np.random.Generator, img: F32, scale: float, exposure: Exposure) -> U8:
    """The scene as a photo (see the module docstring); ``img`` is changed in place."""
    height, width = img.shape[:2]
    strength = rng.uniform(0.5, 1.3) * exposure.gradient
    img *= textures.lighting(rng, height, width, strength)[:, :, None]
    if rng.random() < exposure.hard_shadow:
        img *= hard_shadow(rng, height, width, scale)[:, :, None]
    temp = rng.uniform(-exposure.cast, exposure.cast)
    tint = rng.uniform(-exposure.cast / 2, exposure.cast / 2)
    gain = rng.uniform(0.6, 1.35)
    img *= np.array([gain * (1 + temp), gain * (1 + tint), gain * (1 - temp)], np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    img **= np.float32(rng.uniform(0.8, 1.2))
    img += rng.normal(0, rng.uniform(0.004, 0.02), size=img.shape).astype(np.float32)
    out: U8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        out = defocus(rng, out, float(rng.uniform(0.3, 1.0)) * exposure.defocus_px * scale)
    return out
