"""Drawing onto a synthetic scene: one plant (with its truth box and visible area), the
labels stuck in containers and the litter between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from pipeline.synth.containers import ContainerSpec
from pipeline.synth.geometry import Quad, as_points, quad_point
from pipeline.synth.plants import (
    PlantLook,
    render_plant,
    soft_shadow,
)
from pipeline.synth.types import Box, Container

F32 = NDArray[np.float32]


def draw_plant(
    rng: np.random.Generator,
    img: F32,
    idmap: NDArray[np.int32],
    look: PlantLook,
    cx: float,
    cy: float,
    diameter: float,
    light: tuple[float, float],
    plant_id: int,
    boxes: list[Box],
    areas: list[int],
) -> None:
    radius = diameter / 2
    fx0 = cx - radius
    fy0 = cy - radius
    ix0, iy0 = int(np.floor(fx0)), int(np.floor(fy0))
    rgb, alpha, pad = render_plant(rng, look, diameter, fx0 - ix0, fy0 - iy0)
    ox, oy = ix0 - pad, iy0 - pad
    size = alpha.shape[0]
    height, width = idmap.shape
    # Clip the patch to the image.
    px0, py0 = max(0, -ox), max(0, -oy)
    px1, py1 = min(size, width - ox), min(size, height - oy)
    if px1 <= px0 or py1 <= py0:
        return
    a = alpha[py0:py1, px0:px1]
    solid = a > 0.5
    if not solid.any():
        return
    # Drop shadow, offset along the scene's light direction.
    sh = soft_shadow(alpha, radius * 0.12)
    sdx, sdy = round(light[0] * diameter), round(light[1] * diameter)
    sx0, sy0 = ox + sdx, oy + sdy
    qx0, qy0 = max(0, -sx0), max(0, -sy0)
    qx1, qy1 = min(size, width - sx0), min(size, height - sy0)
    if qx1 > qx0 and qy1 > qy0:
        sreg = img[sy0 + qy0 : sy0 + qy1, sx0 + qx0 : sx0 + qx1]
        sreg *= (1.0 - 0.4 * sh[qy0:qy1, qx0:qx1])[:, :, None]
    reg = img[oy + py0 : oy + py1, ox + px0 : ox + px1]
    reg[:] = reg * (1 - a[:, :, None]) + rgb[py0:py1, px0:px1] * a[:, :, None]
    ids = idmap[oy + py0 : oy + py1, ox + px0 : ox + px1]
    ids[solid] = plant_id
    rows = np.flatnonzero(solid.any(axis=1))
    cols = np.flatnonzero(solid.any(axis=0))
    box = (
        float(ox + px0 + cols[0]),
        float(oy + py0 + rows[0]),
        float(ox + px0 + cols[-1] + 1),
        float(oy + py0 + rows[-1] + 1),
    )
    boxes.append(box)
    areas.append(int(solid.sum()))


def draw_label(
    rng: np.random.Generator, img: F32, idmap: NDArray[np.int32], inner: Quad, scale: float
) -> None:
    """A white plastic plant label (stake seen from above): a small rotated rectangle."""
    height, width = idmap.shape
    x, y = quad_point(inner, rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9))
    lw, lh = rng.uniform(10, 18) * scale, rng.uniform(35, 70) * scale
    ang = rng.uniform(0, np.pi)
    c, s = np.cos(ang), np.sin(ang)
    pts = [
        (x + dx * c - dy * s, y + dx * s + dy * c)
        for dx, dy in ((-lw, -lh), (lw, -lh), (lw, lh), (-lw, lh))
    ]
    x0 = max(0, int(min(p[0] for p in pts)) - 1)
    y0 = max(0, int(min(p[1] for p in pts)) - 1)
    x1 = min(width, int(max(p[0] for p in pts)) + 2)
    y1 = min(height, int(max(p[1] for p in pts)) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    m = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(m).polygon([(px - x0, py - y0) for px, py in pts], fill=255)
    mask = np.asarray(m, dtype=np.float32) / 255.0
    g = rng.uniform(0.8, 0.97)
    colour = np.array([g, g, g * rng.uniform(0.9, 1.0)], dtype=np.float32)
    reg = img[y0:y1, x0:x1]
    reg[:] = reg * (1 - mask[:, :, None]) + colour * mask[:, :, None]
    idmap[y0:y1, x0:x1][mask > 0.5] = 0


def draw_litter(
    rng: np.random.Generator,
    img: F32,
    idmap: NDArray[np.int32],
    specs: Sequence[ContainerSpec],
    scale: float,
) -> None:
    """Dry brown leaves and pebbles outside the containers."""
    height, width = idmap.shape
    n = int(rng.integers(0, 12))
    for _ in range(n):
        x = rng.uniform(0, width)
        y = rng.uniform(0, height)
        if any(
            Container(s.class_name, as_points(s.quad)).contains(x, y, 40 * scale) for s in specs
        ):
            continue
        if rng.random() < 0.5:
            look = PlantLook(
                hue=rng.uniform(0.04, 0.11),
                sat=rng.uniform(0.3, 0.7),
                val=rng.uniform(0.3, 0.6),
                style=int(rng.integers(0, 3)),
                leaves=(1, 3),
            )
            d = rng.uniform(15, 60) * scale
            fx0, fy0 = x - d / 2, y - d / 2
            ix0, iy0 = int(np.floor(fx0)), int(np.floor(fy0))
            rgb, alpha, pad = render_plant(rng, look, d, fx0 - ix0, fy0 - iy0)
            ox, oy = ix0 - pad, iy0 - pad
        else:
            d = max(3.0, rng.uniform(6, 20) * scale)
            size = int(np.ceil(d)) + 2
            m = Image.new("L", (size, size), 0)
            ImageDraw.Draw(m).ellipse([1, 1, d, d * rng.uniform(0.6, 1.0)], fill=255)
            alpha = np.asarray(m, dtype=np.float32) / 255.0
            g = rng.uniform(0.4, 0.75)
            rgb = np.empty((size, size, 3), dtype=np.float32)
            rgb[:] = (g, g * 0.97, g * 0.92)
            ox, oy = int(x), int(y)
        size = alpha.shape[0]
        px0, py0 = max(0, -ox), max(0, -oy)
        px1, py1 = min(size, width - ox), min(size, height - oy)
        if px1 <= px0 or py1 <= py0:
            continue
        a = alpha[py0:py1, px0:px1, None]
        reg = img[oy + py0 : oy + py1, ox + px0 : ox + px1]
        reg[:] = reg * (1 - a) + rgb[py0:py1, px0:px1] * a
