"""Random training samples: crops / zooms, flips, transposes and colour jitter (numpy, PIL).

Every draw comes from the caller's seeded ``numpy.random.Generator``, so a seed gives the same
samples on every run.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from training.data import F32, DetScene, SegScene
from training.layout import PAD, SEG_NET

#: Share of detection crops whose colour channels are shuffled (a green plant turns red or
#: blue, brown soil green): the detector learns plants by shape, whatever their foliage.
CHANNEL_SWAP = 0.2


def color_aug(rng: np.random.Generator, x: F32) -> F32:
    """x: HxWx3 float32 0..1."""
    gain = rng.uniform(0.85, 1.15, size=3).astype(np.float32) * np.float32(rng.uniform(0.6, 1.4))
    x = x * gain
    if rng.random() < 0.5:
        m = x.mean()
        x = (x - m) * np.float32(rng.uniform(0.7, 1.3)) + m
    if rng.random() < 0.3:
        sat = np.float32(rng.uniform(0.5, 1.3))
        g = x.mean(axis=2, keepdims=True)
        x = g + (x - g) * sat
    x = np.clip(x, 0, 1)
    if rng.random() < 0.5:
        x = x ** np.float32(rng.uniform(0.7, 1.4))
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0.005, 0.03), size=x.shape).astype(np.float32)
    return np.clip(x, 0, 1).astype(np.float32)


def det_sample(
    rng: np.random.Generator, scenes: list[DetScene], pil: list[Image.Image], size: int
) -> tuple[F32, F32, F32]:
    """A ``size``-px crop of a random scene at a random scale (0.55–2.5×), mostly inside a
    container: ``(CHW image 0..1, positive boxes, ignored boxes)``; plants cut by the crop or
    mostly hidden are ignored, not negatives."""
    si = int(rng.integers(len(scenes)))
    sc = scenes[si]
    h, w = sc.height, sc.width
    k = math.exp(rng.uniform(math.log(0.55), math.log(2.5)))
    c = size / k
    if rng.random() < 0.85 and len(sc.containers):
        x1, y1, x2, y2 = sc.containers[int(rng.integers(len(sc.containers)))]
        cx, cy = rng.uniform(x1, x2), rng.uniform(y1, y2)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    x0, y0 = cx - c / 2, cy - c / 2
    img = pil[si].transform(
        (size, size),
        Image.Transform.EXTENT,
        (x0, y0, x0 + c, y0 + c),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(PAD, PAD, PAD),
    )
    arr = np.asarray(img, dtype=np.float32) / 255.0
    b = (sc.boxes - np.array([x0, y0, x0, y0], dtype=np.float32)) * np.float32(k)
    clipped = np.clip(b, 0, size)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    carea = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(
        clipped[:, 3] - clipped[:, 1], 0, None
    )
    inside = carea / np.maximum(area, 1e-6)
    touch = carea > 0
    small = np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]) < 5
    pos = touch & (inside >= 0.45) & (sc.vis >= 0.4) & ~small
    ign = touch & ~pos
    # Some letterbox-like grey borders (a crop smaller than one slice is predicted whole).
    if rng.random() < 0.12:
        side = int(rng.integers(4))
        cut = int(rng.uniform(0.1, 0.5) * size)
        sl = [
            (slice(None), slice(0, cut)),
            (slice(None), slice(size - cut, size)),
            (slice(0, cut), slice(None)),
            (slice(size - cut, size), slice(None)),
        ][side]
        arr[sl] = PAD / 255.0
        lo = np.array([0, 0, 0, 0], dtype=np.float32)
        hi = np.array([size, size, size, size], dtype=np.float32)
        if side == 0:
            lo[[0, 2]] = cut
        elif side == 1:
            hi[[0, 2]] = size - cut
        elif side == 2:
            lo[[1, 3]] = cut
        else:
            hi[[1, 3]] = size - cut
        nb = np.clip(clipped, lo, hi)
        na = np.clip(nb[:, 2] - nb[:, 0], 0, None) * np.clip(nb[:, 3] - nb[:, 1], 0, None)
        keep = na / np.maximum(area, 1e-6) >= 0.45
        ign = ign | (pos & ~keep & (na > 0))
        pos = pos & keep
        clipped = nb
    arr = color_aug(rng, arr)
    if rng.random() < CHANNEL_SWAP:
        # plants of any colour on floors of any colour: shape, not hue, makes a plant
        arr = np.ascontiguousarray(arr[:, :, rng.permutation(3)])
    boxes = clipped[pos]
    ignb = clipped[ign]
    # Flips / transpose (plants are seen from above: any orientation).
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
        boxes = boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [size, 0, size, 0]
        ignb = ignb[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [size, 0, size, 0]
    if rng.random() < 0.5:
        arr = arr[::-1]
        boxes = boxes[:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, size, 0, size]
        ignb = ignb[:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, size, 0, size]
    if rng.random() < 0.5:
        arr = arr.transpose(1, 0, 2)
        boxes = boxes[:, [1, 0, 3, 2]]
        ignb = ignb[:, [1, 0, 3, 2]]
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
    return chw, boxes.astype(np.float32), ignb.astype(np.float32)


def seg_sample(
    rng: np.random.Generator, scenes: list[SegScene]
) -> tuple[F32, NDArray[np.bool_], NDArray[np.int64]]:
    """A random scene (sometimes zoomed out into the letterbox grey), flipped / transposed and
    colour-jittered: ``(CHW image 0..1, masks, classes)`` of the containers still visible."""
    sc = scenes[int(rng.integers(len(scenes)))]
    img = sc.image.astype(np.float32) / 255.0
    masks = sc.masks
    size = SEG_NET
    if rng.random() < 0.3:
        # Zoom out and shift inside the grey letterbox.
        s = rng.uniform(0.7, 0.97)
        n = round(size * s)
        ox, oy = int(rng.integers(0, size - n + 1)), int(rng.integers(0, size - n + 1))
        small = np.asarray(
            Image.fromarray((img * 255).astype(np.uint8)).resize((n, n), Image.Resampling.BILINEAR),
            dtype=np.float32,
        )
        img = np.full((size, size, 3), PAD / 255.0, dtype=np.float32)
        img[oy : oy + n, ox : ox + n] = small / 255.0
        ms = np.zeros((len(masks), size, size), dtype=bool)
        for i, m in enumerate(masks):
            mm = Image.fromarray(m.astype(np.uint8) * 255).resize((n, n), Image.Resampling.BILINEAR)
            ms[i, oy : oy + n, ox : ox + n] = np.asarray(mm) > 127
        masks = ms
    img = color_aug(rng, img)
    if rng.random() < 0.5:
        img, masks = img[:, ::-1], masks[:, :, ::-1]
    if rng.random() < 0.5:
        img, masks = img[::-1], masks[:, ::-1]
    if rng.random() < 0.5:
        img, masks = img.transpose(1, 0, 2), masks.transpose(0, 2, 1)
    chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    masks = np.ascontiguousarray(masks)
    keep = masks.reshape(len(masks), size * size).sum(1) > 16
    return chw, masks[keep], sc.classes[keep]


def mask_boxes(masks: NDArray[np.bool_]) -> F32:
    """The pixel box ``(x1, y1, x2, y2)``, x2/y2 exclusive, of each (non-empty) mask."""
    out = np.zeros((len(masks), 4), dtype=np.float32)
    for i, m in enumerate(masks):
        ys = np.flatnonzero(m.any(1))
        xs = np.flatnonzero(m.any(0))
        out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out
