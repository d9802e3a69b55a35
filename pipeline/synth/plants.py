"""Procedural plants: rosettes and leafy blobs drawn with Pillow, shaded with numpy."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

F32 = NDArray[np.float32]

SUPERSAMPLE = 2
VEIN = 250
MARGIN = 100  # label offset of leaf margins (variegated looks)


@dataclass(frozen=True, slots=True)
class PlantLook:
    """Colour and shape parameters shared by the plants of one container (a crop)."""

    hue: float  # 0..1 (HSV), greens ≈ 0.2..0.45
    sat: float
    val: float
    style: int  # 0 elongated rosette, 1 broad rosette, 2 clustered blob, 3 succulent
    leaves: tuple[int, int]
    #: HSV of a leaf margin of another colour (variegated leaves, red-edged lettuce), or None
    margin: tuple[float, float, float] | None = None
    #: the foliage colour group of the look (evaluation reports recall per group)
    foliage: str = "green"


@dataclass(frozen=True)
class LookRanges:
    """The ranges a crop's look is drawn from (hue ranges as fractions of the colour wheel)."""

    yellowish: tuple[float, float]
    bluish: tuple[float, float]
    green: tuple[float, float]
    leaves: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # per style
    sat: tuple[float, float]
    val: tuple[float, float]


CLASSIC_LOOKS = LookRanges(
    yellowish=(0.16, 0.22),
    bluish=(0.40, 0.48),
    green=(0.22, 0.38),
    leaves=((4, 9), (5, 9), (7, 14)),
    sat=(0.35, 0.85),
    val=(0.38, 0.85),
)
#: More leaves and rosette shapes (star rosettes of up to 18 narrow leaves, sparse 3-leaf
#: seedlings), pale to dark greens, yellow-greens and blue-greens.
WIDE_LOOKS = LookRanges(
    yellowish=(0.14, 0.22),
    bluish=(0.40, 0.50),
    green=(0.22, 0.40),
    leaves=((3, 18), (4, 12), (6, 16)),
    sat=(0.3, 0.9),
    val=(0.3, 0.9),
)


def draw_look(rng: np.random.Generator, ranges: LookRanges) -> PlantLook:
    """A crop's look from ``ranges``: 15 % yellowish, 15 % bluish, the rest green."""
    r = rng.random()
    if r < 0.15:
        hue = rng.uniform(*ranges.yellowish)
    elif r < 0.3:
        hue = rng.uniform(*ranges.bluish)
    else:
        hue = rng.uniform(*ranges.green)
    style = int(rng.integers(0, 3))
    return PlantLook(
        hue=hue,
        sat=rng.uniform(*ranges.sat),
        val=rng.uniform(*ranges.val),
        style=style,
        leaves=ranges.leaves[style],
    )


def random_look(rng: np.random.Generator) -> PlantLook:
    """A crop's look: mostly greens, some yellowish, some bluish."""
    return draw_look(rng, CLASSIC_LOOKS)


def random_look_wide(rng: np.random.Generator) -> PlantLook:
    """A wider range of crops than :func:`random_look` (:data:`WIDE_LOOKS`)."""
    return draw_look(rng, WIDE_LOOKS)


def _rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))


_U = np.linspace(0.0, 1.0, 12)
_U2 = _U**2


def _leaf_polygon(
    cx: float,
    cy: float,
    angle: float,
    start: float,
    length: float,
    width: float,
    bend: float,
    pointed: float,
    limit: float,
) -> list[tuple[float, float]]:
    """A leaf outline from ``start`` to ``start + length`` along ``angle``, within ``limit``."""
    half = width * np.sin(np.pi * _U**pointed) ** 0.8 / 2.0
    along = np.concatenate([start + _U * length, (start + _U * length)[::-1]])
    offset = bend * _U2 * length
    perp = np.concatenate([offset + half, (offset - half)[::-1]])
    ca, sa = np.cos(angle), np.sin(angle)
    dx = along * ca - perp * sa
    dy = along * sa + perp * ca
    d = np.hypot(dx, dy)
    f = np.minimum(1.0, limit / np.maximum(d, 1e-6))
    xs = cx + dx * f
    ys = cy + dy * f
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def render_plant(
    rng: np.random.Generator,
    look: PlantLook,
    diameter: float,
    frac_x: float,
    frac_y: float,
) -> tuple[F32, F32, int]:
    """One plant as ``(rgb, alpha, pad)``.

    The patch is square, ``size = ceil(diameter) + 2 * pad``; the plant centre lies at
    ``(pad + diameter/2 + frac_x, pad + diameter/2 + frac_y)`` in patch pixels and every leaf
    stays within ``diameter / 2`` of it.
    """
    radius = diameter / 2.0
    pad = 2
    size = int(np.ceil(diameter)) + 2 * pad + 1
    ss = SUPERSAMPLE
    big = size * ss
    cx = (pad + radius + frac_x) * ss
    cy = (pad + radius + frac_y) * ss
    rad = radius * ss
    label = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(label)
    n = int(rng.integers(look.leaves[0], look.leaves[1] + 1))
    base_angle = rng.uniform(0, 2 * np.pi)
    if look.style == 3:
        n = _succulent(rng, draw, look, n, base_angle, cx, cy, rad)
    for k in range(n if look.style != 3 else 0):
        idx = k + 1
        angle = base_angle + 2 * np.pi * k / n + rng.normal(0, 0.25)
        if look.style == 2:
            # Clustered blob: round leaves around random points near the centre.
            dist = rng.uniform(0.0, 0.5) * rad
            lr = rng.uniform(0.28, 0.5) * rad
            lr = min(lr, rad - dist)
            ox = cx + dist * np.cos(angle)
            oy = cy + dist * np.sin(angle)
            draw.ellipse([ox - lr, oy - lr, ox + lr, oy + lr], fill=idx)
            continue
        length = rad * rng.uniform(0.7, 0.98)
        width_ratio = rng.uniform(0.25, 0.45) if look.style == 0 else rng.uniform(0.5, 0.8)
        start = rad * rng.uniform(-0.05, 0.08)
        length = min(length, rad - max(start, 0.0))
        bend = rng.normal(0, 0.12)
        pointed = rng.uniform(0.6, 1.0) if look.style == 0 else rng.uniform(0.9, 1.3)
        # Every point stays inside the plant radius (bend can push tips outwards).
        pts = _leaf_polygon(
            cx, cy, angle, start, length, length * width_ratio, bend, pointed, rad - 1.0
        )
        if look.margin is not None:
            # the leaf in the margin colour, its narrower core in the leaf colour over it
            draw.polygon(pts, fill=MARGIN + idx)
            pts = _leaf_polygon(
                cx,
                cy,
                angle,
                start,
                0.9 * length,
                0.5 * length * width_ratio,
                bend,
                pointed,
                rad - 1.0,
            )
        draw.polygon(pts, fill=idx)
        if look.style == 0 and rng.random() < 0.7:
            tip = (
                cx + (start + 0.85 * length) * np.cos(angle),
                cy + (start + 0.85 * length) * np.sin(angle),
            )
            draw.line([(cx, cy), tip], fill=VEIN, width=max(1, int(rad / 30)))
    lab = np.asarray(label, dtype=np.uint8)
    # Per-leaf colour around the crop's look.
    colours = np.zeros((256, 3), dtype=np.float32)
    for k in range(1, n + 1):
        colours[k] = _rgb(
            look.hue + rng.normal(0, 0.015),
            look.sat * rng.uniform(0.85, 1.12),
            look.val * rng.uniform(0.78, 1.15),
        )
    colours[VEIN] = _rgb(look.hue, look.sat * 0.55, min(1.0, look.val * 1.3))
    if look.margin is not None:
        mh, ms, mv = look.margin
        for k in range(1, n + 1):
            colours[MARGIN + k] = _rgb(mh, ms, mv * float(rng.uniform(0.9, 1.08)))
    rgb = colours[lab]
    axis = np.arange(big, dtype=np.float32)
    r = np.hypot(axis[None, :] - cx, axis[:, None] - cy) / max(rad, 1.0)
    shading = 0.72 + 0.4 * np.clip(r, 0, 1) if rng.random() < 0.6 else 1.1 - 0.3 * np.clip(r, 0, 1)
    # Leaf edges slightly darker: distance to a different label.
    edge = np.zeros_like(lab, dtype=bool)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    noise = rng.standard_normal(lab.shape, dtype=np.float32)
    shade = shading * (1.0 - 0.25 * edge) * (1.0 + 0.06 * noise)
    rgb = rgb * shade[:, :, None]
    alpha = (lab > 0).astype(np.float32)
    # Down-sample (anti-aliasing): average SUPERSAMPLE × SUPERSAMPLE blocks.
    rgb_small = rgb.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    a_small = alpha.reshape(size, ss, size, ss).mean(axis=(1, 3))
    # Colour is premultiplied by coverage in the average; un-premultiply.
    rgb_out = rgb_small / np.maximum(a_small, 1e-3)[:, :, None]
    return (
        np.asarray(np.clip(rgb_out, 0, 1), dtype=np.float32),
        np.asarray(a_small, dtype=np.float32),
        pad,
    )


def _succulent(
    rng: np.random.Generator,
    draw: ImageDraw.ImageDraw,
    look: PlantLook,
    n: int,
    base_angle: float,
    cx: float,
    cy: float,
    rad: float,
) -> int:
    """A succulent rosette (echeveria-like): an outer whorl of ``n`` broad pointed leaves and
    an inner, shorter whorl between them, drawn over it. Returns the number of leaf labels."""
    inner = max(3, n // 2)
    labels = 0
    for whorl, count, reach in ((0, n, (0.8, 0.98)), (1, inner, (0.45, 0.62))):
        offset = base_angle + (np.pi / count if whorl else 0.0)
        for k in range(count):
            labels += 1
            angle = offset + 2 * np.pi * k / count + rng.normal(0, 0.12)
            length = rad * rng.uniform(*reach)
            pts = _leaf_polygon(
                cx,
                cy,
                angle,
                0.0,
                length,
                length * rng.uniform(0.45, 0.65),
                rng.normal(0, 0.05),
                rng.uniform(0.7, 1.0),
                rad - 1.0,
            )
            if look.margin is not None:
                draw.polygon(pts, fill=MARGIN + labels)
                pts = _leaf_polygon(
                    cx, cy, angle, 0.0, 0.85 * length, 0.4 * length, 0.0, 1.0, rad - 1.0
                )
            draw.polygon(pts, fill=labels)
    return labels


def soft_shadow(alpha: F32, blur: float) -> F32:
    """A blurred copy of ``alpha`` (0..1) for a drop shadow."""
    img = Image.fromarray(np.asarray(alpha * 255, dtype=np.uint8), mode="L")
    out = img.filter(ImageFilter.GaussianBlur(radius=max(blur, 0.5)))
    return np.asarray(out, dtype=np.float32) / 255.0
