"""Build the default models from the project's own synthetic scenes (build-time only).

    /work/main/.venv-build/bin/python -m pipeline.models.build --seed 0 --out pipeline/models

Generates scenes with :mod:`pipeline.synth`, trains two compact anchor-free CNNs written here
(no third-party training code), exports them to ONNX in the Ultralytics YOLO layouts, checks
them with onnxruntime, measures them on held-out seeds and writes the JSON sidecars and
``README_MODELS.md``.

* ``det.onnx``: ``images [B,3,512,512]`` → ``output0 [B,5,4096]`` (cx, cy, w, h in input px,
  sigmoid score of ``plant``), one anchor per stride-8 cell, row-major.
* ``seg.onnx``: ``images [B,3,1024,1024]`` → ``output0 [B,41,256]`` (cx, cy, w, h, 5 class
  scores, 32 mask coefficients), ``output1 [B,32,256,256]`` (mask prototypes). Internally the
  input is average-pooled 4× to 256 and the network runs there (containers are large); boxes
  are scaled back to 1024-px input coordinates and prototypes upsampled to 256×256.

PyTorch is needed only here; the runtime uses onnxruntime. Training is deterministic for a
given seed, thread count and PyTorch build.
"""

# mypy: ignore-errors
# (torch is not installed in the runtime venv where mypy runs.)

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipeline.synth import CONTAINER_CLASSES, generate_scene

DET_NAMES = ["plant"]
SEG_NAMES = list(CONTAINER_CLASSES)
DET_IMGSZ = 512
SEG_IMGSZ = 1024
SEG_POOL = 4  # seg network runs at SEG_IMGSZ / SEG_POOL
SEG_NET = SEG_IMGSZ // SEG_POOL
DET_STRIDE = 8
SEG_STRIDE = 16 * SEG_POOL  # in 1024-px input pixels
PAD = 114
HELDOUT_BASE = 900_000_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def letterbox_geometry(w: int, h: int, size: int) -> tuple[float, int, int, int, int]:
    """``(scale, new_w, new_h, pad_x, pad_y)``, same rounding as pipeline.inference.yolo."""
    scale = min(size / h, size / w)
    new_w = min(size, max(1, round(w * scale)))
    new_h = min(size, max(1, round(h * scale)))
    pad_x = round((size - new_w) / 2 - 0.1)
    pad_y = round((size - new_h) / 2 - 0.1)
    return scale, new_w, new_h, pad_x, pad_y


def letterbox_u8(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """Letterbox (PIL bilinear, pad 114) → ``(HxWx3 uint8, scale, pad_x, pad_y)``."""
    h, w = rgb.shape[:2]
    scale, nw, nh, px, py = letterbox_geometry(w, h, size)
    out = np.full((size, size, 3), PAD, dtype=np.uint8)
    img = Image.fromarray(rgb)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    out[py : py + nh, px : px + nw] = np.asarray(img)
    return out, scale, px, py


def pool_u8(img: np.ndarray, k: int) -> np.ndarray:
    """Average-pool an HxWx3 uint8 image by ``k`` (as the seg graph does), uint8 result."""
    h, w = img.shape[:2]
    f = img.reshape(h // k, k, w // k, k, 3).astype(np.float32).mean(axis=(1, 3))
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def polygon_mask(poly: Sequence[tuple[float, float]], size: int) -> np.ndarray:
    m = Image.new("L", (size, size), 0)
    ImageDraw.Draw(m).polygon([(float(x), float(y)) for x, y in poly], fill=255)
    return np.asarray(m) > 127


@dataclass
class DetScene:
    image: np.ndarray  # HxWx3 uint8
    boxes: np.ndarray  # (n,4) float32 xyxy
    vis: np.ndarray  # (n,)
    containers: np.ndarray  # (k,4) container bboxes


@dataclass
class SegScene:
    image: np.ndarray  # SEG_NET x SEG_NET x 3 uint8 (letterboxed to 1024, pooled 4x)
    masks: np.ndarray  # (k, SEG_NET, SEG_NET) bool
    classes: np.ndarray  # (k,) int64


def _seg_from_scene(scene: Any) -> SegScene:
    lb, scale, px, py = letterbox_u8(np.asarray(scene.image), SEG_IMGSZ)
    small = pool_u8(lb, SEG_POOL)
    masks = []
    for c in scene.containers:
        poly = [((x * scale + px) / SEG_POOL, (y * scale + py) / SEG_POOL) for x, y in c.polygon]
        masks.append(polygon_mask(poly, SEG_NET))
    return SegScene(
        image=small,
        masks=np.stack(masks),
        classes=np.array([c.class_id for c in scene.containers], dtype=np.int64),
    )


def _job(args: tuple[int, int, int, bool]) -> tuple[DetScene | None, SegScene]:
    seed, w, h, want_det = args
    scene = generate_scene(seed, w, h)
    seg = _seg_from_scene(scene)
    det = None
    if want_det:
        det = DetScene(
            image=np.array(scene.image),
            boxes=np.array([p.box for p in scene.plants], dtype=np.float32).reshape(-1, 4),
            vis=np.array([p.visibility for p in scene.plants], dtype=np.float32),
            containers=np.array([c.bbox for c in scene.containers], dtype=np.float32),
        )
    return det, seg


SEG_SHAPES = [(1024, 768), (768, 1024), (1024, 1024), (1024, 576), (1024, 683), (900, 1200)]


SEG_EXTRA_OFFSET = 500_000


def scene_jobs(
    base: int, n_det: int, n_seg_shared: int, n_seg_extra: int, det: bool, seg: bool
) -> list[tuple[int, int, int, bool]]:
    """Scene jobs ``(seed, width, height, keep full-res for det)``.

    Detection uses seeds ``base + i`` (2000×1500, ``i < n_det``); segmentation uses the first
    ``n_seg_shared`` of those plus ``n_seg_extra`` scenes of varied aspect ratios at seeds
    ``base + SEG_EXTRA_OFFSET + j``. Which models are built does not change any model's data.
    """
    n_first = max(n_det if det else 0, n_seg_shared if seg else 0)
    jobs = [(base + i, 2000, 1500, det and i < n_det) for i in range(n_first)]
    if seg:
        for j in range(n_seg_extra):
            w, h = SEG_SHAPES[j % len(SEG_SHAPES)]
            jobs.append((base + SEG_EXTRA_OFFSET + j, w, h, False))
    return jobs


def generate(jobs: list[tuple[int, int, int, bool]], workers: int) -> list[Any]:
    if workers <= 1:
        return [_job(j) for j in jobs]
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        return list(pool.imap(_job, jobs, chunksize=2))


# ------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------


def _torch():
    import torch  # type: ignore[import-not-found]

    return torch


def build_nets():
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    def cbs(i: int, o: int, s: int = 1, k: int = 3) -> Any:
        return nn.Sequential(
            nn.Conv2d(i, o, k, s, k // 2, bias=False), nn.BatchNorm2d(o), nn.SiLU(inplace=True)
        )

    class SPPF(nn.Module):
        """Spatial pyramid pooling (chained 5x5 max pools): wide context for big plants."""

        def __init__(self, i: int, o: int) -> None:
            super().__init__()
            self.a = cbs(i, i // 2, 1, 1)
            self.b = cbs(i // 2 * 4, o, 1, 1)
            self.pool = nn.MaxPool2d(5, 1, 2)

        def forward(self, x: Any) -> Any:
            y0 = self.a(x)
            y1 = self.pool(y0)
            y2 = self.pool(y1)
            y3 = self.pool(y2)
            return self.b(torch.cat([y0, y1, y2, y3], 1))

    class DetNet(nn.Module):
        """Stride-8 anchor-free detector: objectness + ltrb distances per cell."""

        def __init__(self) -> None:
            super().__init__()
            self.c3 = nn.Sequential(
                cbs(3, 16, 2), cbs(16, 32, 2), cbs(32, 32), cbs(32, 64, 2), cbs(64, 64)
            )
            self.c4 = nn.Sequential(cbs(64, 96, 2), cbs(96, 96))
            self.c5 = nn.Sequential(cbs(96, 128, 2), cbs(128, 128))
            self.spp = SPPF(128, 128)
            self.l5 = nn.Conv2d(128, 64, 1)
            self.l4 = nn.Conv2d(96, 64, 1)
            self.l3 = nn.Conv2d(64, 64, 1)
            self.f4 = cbs(64, 64)
            self.f3 = cbs(64, 64)
            self.head = nn.Sequential(cbs(64, 64), cbs(64, 64))
            self.out = nn.Conv2d(64, 5, 1)
            nn.init.constant_(self.out.bias, 0.0)
            with torch.no_grad():
                self.out.bias[0] = -4.6  # prior 0.01

        def forward(self, x: Any) -> Any:
            c3 = self.c3(x)
            c4 = self.c4(c3)
            c5 = self.spp(self.c5(c4))
            p = self.f4(F.interpolate(self.l5(c5), scale_factor=2.0) + self.l4(c4))
            p = self.f3(F.interpolate(p, scale_factor=2.0) + self.l3(c3))
            return self.out(self.head(p))  # (B, 5, H/8, W/8): logit, l, t, r, b

    class SegNet(nn.Module):
        """Runs at 256 px: stride-16 head (box, 5 classes, 32 coeffs) + stride-4 prototypes."""

        def __init__(self) -> None:
            super().__init__()
            self.c2 = nn.Sequential(cbs(3, 16, 2), cbs(16, 32, 2), cbs(32, 32))
            self.c3 = nn.Sequential(cbs(32, 48, 2), cbs(48, 48))
            self.c4 = nn.Sequential(cbs(48, 80, 2), cbs(80, 80))
            self.c5 = nn.Sequential(cbs(80, 96, 2), cbs(96, 96))
            self.c6 = nn.Sequential(cbs(96, 112, 2), cbs(112, 112))
            self.l6 = nn.Conv2d(112, 64, 1)
            self.l5 = nn.Conv2d(96, 64, 1)
            self.l4 = nn.Conv2d(80, 64, 1)
            self.l3 = nn.Conv2d(48, 48, 1)
            self.l2 = nn.Conv2d(32, 48, 1)
            self.f5 = cbs(64, 64)
            self.f4 = cbs(64, 64)
            self.head = nn.Sequential(cbs(64, 80), cbs(80, 80))
            self.out = nn.Conv2d(80, 4 + 5 + 32, 1)
            self.p3 = nn.Conv2d(64, 48, 1)
            self.pf3 = cbs(48, 48)
            self.pf2 = nn.Sequential(cbs(48, 48), cbs(48, 48))
            self.proto = nn.Conv2d(48, 32, 1)
            nn.init.constant_(self.out.bias, 0.0)
            with torch.no_grad():
                self.out.bias[4:9] = -4.6

        def forward(self, x: Any) -> tuple[Any, Any]:
            c2 = self.c2(x)
            c3 = self.c3(c2)
            c4 = self.c4(c3)
            c5 = self.c5(c4)
            c6 = self.c6(c5)
            p5 = self.f5(F.interpolate(self.l6(c6), scale_factor=2.0) + self.l5(c5))
            p4 = self.f4(F.interpolate(p5, scale_factor=2.0) + self.l4(c4))
            raw = self.out(self.head(p4))  # (B, 41, H/16, W/16)
            q = self.pf3(F.interpolate(self.p3(p4), scale_factor=2.0) + self.l3(c3))
            q = self.pf2(F.interpolate(q, scale_factor=2.0) + self.l2(c2))
            return raw, self.proto(q)  # protos (B, 32, H/4, W/4)

    return DetNet, SegNet


def grid_centers(gh: int, gw: int, stride: float) -> Any:
    torch = _torch()
    ys, xs = torch.meshgrid(
        torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([(xs.reshape(-1) + 0.5) * stride, (ys.reshape(-1) + 0.5) * stride], 1)


DET_DIST_SCALE = 16.0
SEG_DIST_SCALE = 32.0
MASK_POS = 4


def decode_ltrb(raw_ltrb: Any, centers: Any, scale: float) -> Any:
    """(B, 4, N) raw → (B, N, 4) xyxy."""
    torch = _torch()
    d = torch.exp(raw_ltrb.clamp(-5.0, 5.0)) * scale  # (B,4,N)
    cx, cy = centers[:, 0], centers[:, 1]
    return torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], dim=2)


def make_det_export(net: Any) -> Any:
    torch = _torch()
    g = DET_IMGSZ // DET_STRIDE
    centers = grid_centers(g, g, DET_STRIDE)

    class DetExport(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("centers", centers.t().unsqueeze(0).contiguous())  # (1,2,N)

        def forward(self, images: Any) -> Any:
            raw = self.net(images).flatten(2)  # (B,5,N)
            d = torch.exp(raw[:, 1:5].clamp(-5.0, 5.0)) * DET_DIST_SCALE
            cx = self.centers[:, 0:1] + (d[:, 2:3] - d[:, 0:1]) * 0.5
            cy = self.centers[:, 1:2] + (d[:, 3:4] - d[:, 1:2]) * 0.5
            w = d[:, 0:1] + d[:, 2:3]
            h = d[:, 1:2] + d[:, 3:4]
            return torch.cat([cx, cy, w, h, torch.sigmoid(raw[:, 0:1])], dim=1)

    return DetExport().eval()


def make_seg_export(net: Any) -> Any:
    torch = _torch()
    F = torch.nn.functional
    g = SEG_NET // 16
    centers = grid_centers(g, g, 16)

    class SegExport(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("centers", centers.t().unsqueeze(0).contiguous())

        def forward(self, images: Any) -> tuple[Any, Any]:
            x = F.avg_pool2d(images, SEG_POOL)
            raw, protos = self.net(x)
            raw = raw.flatten(2)  # (B,41,N)
            d = torch.exp(raw[:, 0:4].clamp(-5.0, 5.0)) * SEG_DIST_SCALE
            s = float(SEG_POOL)
            cx = (self.centers[:, 0:1] + (d[:, 2:3] - d[:, 0:1]) * 0.5) * s
            cy = (self.centers[:, 1:2] + (d[:, 3:4] - d[:, 1:2]) * 0.5) * s
            w = (d[:, 0:1] + d[:, 2:3]) * s
            h = (d[:, 1:2] + d[:, 3:4]) * s
            out0 = torch.cat([cx, cy, w, h, torch.sigmoid(raw[:, 4:9]), raw[:, 9:41]], dim=1)
            out1 = F.interpolate(
                protos, size=(SEG_IMGSZ // 4, SEG_IMGSZ // 4), mode="bilinear", align_corners=False
            )
            return out0, out1

    return SegExport().eval()


# ------------------------------------------------------------------------------------------
# Losses / assignment
# ------------------------------------------------------------------------------------------


def giou(a: Any, b: Any) -> Any:
    torch = _torch()
    ix1 = torch.maximum(a[:, 0], b[:, 0])
    iy1 = torch.maximum(a[:, 1], b[:, 1])
    ix2 = torch.minimum(a[:, 2], b[:, 2])
    iy2 = torch.minimum(a[:, 3], b[:, 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = aa + ab - inter + 1e-6
    iou = inter / union
    cx1 = torch.minimum(a[:, 0], b[:, 0])
    cy1 = torch.minimum(a[:, 1], b[:, 1])
    cx2 = torch.maximum(a[:, 2], b[:, 2])
    cy2 = torch.maximum(a[:, 3], b[:, 3])
    hull = (cx2 - cx1) * (cy2 - cy1) + 1e-6
    return iou - (hull - union) / hull


def focal(logits: Any, targets: Any, gamma: float = 2.0, alpha: float = 0.25) -> Any:
    torch = _torch()
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pt = p * targets + (1 - p) * (1 - targets)
    w = alpha * targets + (1 - alpha) * (1 - targets)
    return w * ce * (1 - pt) ** gamma


def qfocal(logits: Any, targets: Any, beta: float = 2.0) -> Any:
    """Quality focal loss: BCE towards a soft (IoU) target, scaled by |p - t|^beta."""
    torch = _torch()
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return ce * (p - targets).abs() ** beta


def assign(
    centers: Any, boxes: Any, ignore: Any, rmin: float, rfrac: float
) -> tuple[Any, Any, Any]:
    """Centre sampling. Returns (assigned gt index or -1, ignore mask) per cell."""
    torch = _torch()
    n = centers.shape[0]
    idx = torch.full((n,), -1, dtype=torch.long)
    ign = torch.zeros(n, dtype=torch.bool)
    if boxes.shape[0]:
        gc = (boxes[:, :2] + boxes[:, 2:]) / 2
        wh = boxes[:, 2:] - boxes[:, :2]
        r = torch.clamp(rfrac * wh.min(1).values, min=rmin)
        d = ((centers[:, None, :] - gc[None, :, :]) ** 2).sum(-1).sqrt()  # (n, m)
        cand = d <= r[None, :]
        area = (wh[:, 0] * wh[:, 1])[None, :].expand(n, -1)
        cost = torch.where(cand, area, torch.full_like(area, float("inf")))
        best = cost.argmin(1)
        has = cand.any(1)
        idx[has] = best[has]
    if ignore.shape[0]:
        gc = (ignore[:, :2] + ignore[:, 2:]) / 2
        wh = ignore[:, 2:] - ignore[:, :2]
        r = torch.clamp(0.35 * wh.min(1).values, min=rmin)
        dd = ((centers[:, None, :] - gc[None, :, :]) ** 2).sum(-1).sqrt()
        ign = (dd <= r[None, :]).any(1) & (idx < 0)
    return idx, ign, None


# ------------------------------------------------------------------------------------------
# Det sampling
# ------------------------------------------------------------------------------------------


def _color_aug(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    si = int(rng.integers(len(scenes)))
    sc = scenes[si]
    h, w = sc.image.shape[:2]
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
    arr = _color_aug(rng, arr)
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


# ------------------------------------------------------------------------------------------
# Seg sampling
# ------------------------------------------------------------------------------------------


def seg_sample(
    rng: np.random.Generator, scenes: list[SegScene]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    img = _color_aug(rng, img)
    if rng.random() < 0.5:
        img, masks = img[:, ::-1], masks[:, :, ::-1]
    if rng.random() < 0.5:
        img, masks = img[::-1], masks[:, ::-1]
    if rng.random() < 0.5:
        img, masks = img.transpose(1, 0, 2), masks.transpose(0, 2, 1)
    chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    masks = np.ascontiguousarray(masks)
    keep = masks.reshape(len(masks), -1).sum(1) > 16
    return chw, masks[keep], sc.classes[keep]


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    out = np.zeros((len(masks), 4), dtype=np.float32)
    for i, m in enumerate(masks):
        ys = np.flatnonzero(m.any(1))
        xs = np.flatnonzero(m.any(0))
        out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def lr_at(it: int, total: int, base: float, warm: int = 150) -> float:
    if it < warm:
        return base * (it + 1) / warm
    p = (it - warm) / max(1, total - warm)
    return base * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * p)))


def train_det(
    scenes: list[DetScene],
    iters: int,
    batch: int,
    seed: int,
    size: int = 256,
    quality: bool = False,
) -> Any:
    torch = _torch()
    DetNet, _ = build_nets()
    torch.manual_seed(seed)
    net = DetNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    rng = np.random.default_rng(seed + 11)
    pil = [Image.fromarray(s.image) for s in scenes]
    g = size // DET_STRIDE
    centers = grid_centers(g, g, DET_STRIDE)
    net.train()
    t0 = time.time()
    run = {"cls": 0.0, "box": 0.0, "npos": 0.0}
    for it in range(iters):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(it, iters, 2e-3)
        xs, gts, igs = [], [], []
        for _ in range(batch):
            x, b, ig = det_sample(rng, scenes, pil, size)
            xs.append(x)
            gts.append(torch.from_numpy(b))
            igs.append(torch.from_numpy(ig))
        x = torch.from_numpy(np.stack(xs))
        raw = net(x).flatten(2)  # (B,5,N)
        logits = raw[:, 0]
        boxes = decode_ltrb(raw[:, 1:5], centers, DET_DIST_SCALE)  # (B,N,4)
        tcls = torch.zeros_like(logits)
        valid = torch.ones_like(logits, dtype=torch.bool)
        pb, tb, npos_i = [], [], []
        for bi in range(batch):
            idx, ign, _ = assign(centers, gts[bi], igs[bi], rmin=0.72 * DET_STRIDE, rfrac=0.2)
            pos = idx >= 0
            valid[bi, ign] = False
            if pos.any():
                pbi, tbi = boxes[bi, pos], gts[bi][idx[pos]]
                # IoU-aware score target (quality focal loss): a badly placed box must not
                # score high, so NMS keeps the well-placed one (dense seedbeds).
                with torch.no_grad():
                    q = giou(pbi, tbi).clamp(min=0.0) if quality else torch.ones(len(pbi))
                tcls[bi, pos] = q.clamp(min=0.05)
                npos_i.append(float(pos.sum()))
                pb.append(pbi)
                tb.append(tbi)
        npos = max(1.0, sum(npos_i))
        if quality:
            lcls = (qfocal(logits, tcls) * valid).sum() / npos
        else:
            lcls = (focal(logits, tcls) * valid).sum() / npos
        lbox = (1 - giou(torch.cat(pb), torch.cat(tb))).sum() / npos if pb else logits.sum() * 0
        loss = lcls + 2.0 * lbox
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        run["cls"] = 0.98 * run["cls"] + 0.02 * float(lcls.detach())
        run["box"] = 0.98 * run["box"] + 0.02 * float(lbox.detach())
        run["npos"] = 0.98 * run["npos"] + 0.02 * npos
        if it % 100 == 0 or it == iters - 1:
            el = time.time() - t0
            log(
                f"det it {it}/{iters} cls {run['cls']:.4f} box {run['box']:.4f} "
                f"npos {run['npos']:.0f} {el:.0f}s (eta {el / (it + 1) * (iters - it - 1):.0f}s)"
            )
    net.eval()
    return net


def train_seg(scenes: list[SegScene], iters: int, batch: int, seed: int) -> Any:
    torch = _torch()
    F = torch.nn.functional
    _, SegNet = build_nets()
    torch.manual_seed(seed + 1)
    net = SegNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    rng = np.random.default_rng(seed + 23)
    g = SEG_NET // 16
    centers = grid_centers(g, g, 16)
    mres = SEG_NET // 2  # mask loss resolution (128)
    net.train()
    t0 = time.time()
    run = {"cls": 0.0, "box": 0.0, "mask": 0.0}
    for it in range(iters):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(it, iters, 2e-3)
        xs, boxes_l, masks_l, cls_l = [], [], [], []
        for _ in range(batch):
            x, m, c = seg_sample(rng, scenes)
            xs.append(x)
            boxes_l.append(torch.from_numpy(mask_boxes(m)))
            small = m.reshape(len(m), mres, 2, mres, 2).mean(axis=(2, 4)) >= 0.5
            masks_l.append(torch.from_numpy(small.astype(np.float32)))
            cls_l.append(torch.from_numpy(c))
        x = torch.from_numpy(np.stack(xs))
        raw, protos = net(x)
        raw = raw.flatten(2)  # (B,41,N)
        pboxes = decode_ltrb(raw[:, 0:4], centers, SEG_DIST_SCALE)
        logits = raw[:, 4:9].transpose(1, 2)  # (B,N,5)
        coefs = raw[:, 9:41].transpose(1, 2)  # (B,N,32)
        up = F.interpolate(protos, size=(mres, mres), mode="bilinear", align_corners=False)
        tcls = torch.zeros_like(logits)
        pb, tb, lm, npos, nmask = [], [], [], 0.0, 0.0
        ys = torch.arange(mres, dtype=torch.float32).view(1, mres, 1) + 0.5
        xs_ = torch.arange(mres, dtype=torch.float32).view(1, 1, mres) + 0.5
        for bi in range(batch):
            gtb = boxes_l[bi]
            idx, _, _ = assign(centers, gtb, torch.zeros((0, 4)), rmin=12.0, rfrac=0.25)
            pos = idx >= 0
            if not pos.any():
                continue
            gi = idx[pos]
            tcls[bi, pos, cls_l[bi][gi]] = 1.0
            npos += float(pos.sum())
            pb.append(pboxes[bi, pos])
            tb.append(gtb[gi])
            # Mask loss on at most MASK_POS cells per container (nearest to its centre).
            cells = torch.nonzero(pos).flatten()
            gcen = (gtb[gi, :2] + gtb[gi, 2:]) / 2
            dist = ((centers[cells] - gcen) ** 2).sum(1)
            chosen = []
            for gj in torch.unique(gi):
                sel = torch.nonzero(gi == gj).flatten()
                chosen.append(sel[torch.argsort(dist[sel], stable=True)[:MASK_POS]])
            ch = torch.cat(chosen)
            mcells, gi = cells[ch], gi[ch]
            mlog = torch.einsum("pc,chw->phw", coefs[bi, mcells], up[bi])
            tgt = masks_l[bi][gi]
            bb = gtb[gi] / 2.0  # box in mask-res px
            inbox = (
                (xs_ >= bb[:, 0, None, None])
                & (xs_ < bb[:, 2, None, None])
                & (ys >= bb[:, 1, None, None])
                & (ys < bb[:, 3, None, None])
            ).float()
            bce = F.binary_cross_entropy_with_logits(mlog, tgt, reduction="none")
            lm.append((bce * inbox).sum((1, 2)) / inbox.sum((1, 2)).clamp(min=1.0))
            nmask += float(len(gi))
        npos_ = max(1.0, npos)
        lcls = focal(logits, tcls).sum() / npos_
        if pb:
            lbox = (1 - giou(torch.cat(pb), torch.cat(tb))).sum() / npos_
            lmask = torch.cat(lm).sum() / max(1.0, nmask)
        else:
            lbox = logits.sum() * 0
            lmask = logits.sum() * 0
        loss = lcls + 2.0 * lbox + 2.0 * lmask
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        run["cls"] = 0.98 * run["cls"] + 0.02 * float(lcls.detach())
        run["box"] = 0.98 * run["box"] + 0.02 * float(lbox.detach())
        run["mask"] = 0.98 * run["mask"] + 0.02 * float(lmask.detach())
        if it % 100 == 0 or it == iters - 1:
            el = time.time() - t0
            log(
                f"seg it {it}/{iters} cls {run['cls']:.4f} box {run['box']:.4f} "
                f"mask {run['mask']:.4f} {el:.0f}s (eta {el / (it + 1) * (iters - it - 1):.0f}s)"
            )
    net.eval()
    return net


# ------------------------------------------------------------------------------------------
# Export + verification
# ------------------------------------------------------------------------------------------


def export_onnx(module: Any, imgsz: int, path: Path, outputs: list[str], meta: dict[str, str]):
    torch = _torch()
    import onnx  # type: ignore[import-not-found]

    dummy = torch.zeros(1, 3, imgsz, imgsz)
    dyn = {"images": {0: "batch"}}
    for o in outputs:
        dyn[o] = {0: "batch"}
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            module,
            (dummy,),
            str(tmp),
            input_names=["images"],
            output_names=outputs,
            dynamic_axes=dyn,
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(tmp))
    tmp.unlink()
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    model.producer_name = "plantpipe"
    model.doc_string = "plantpipe default model, built by pipeline/models/build.py"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ort_session(path: Path) -> Any:
    import onnxruntime as ort  # type: ignore[import-not-found]

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("BUILD_THREADS", "2"))
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verify_shapes(det: Path | None, seg: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if det is not None:
        s = ort_session(det)
        for b in (1, 3):
            y = s.run(None, {"images": np.zeros((b, 3, DET_IMGSZ, DET_IMGSZ), np.float32)})
            assert [o.name for o in s.get_outputs()] == ["output0"]
            assert y[0].shape == (b, 5, (DET_IMGSZ // DET_STRIDE) ** 2), y[0].shape
        out["det"] = {"output0": list(y[0].shape[1:])}
    if seg is not None:
        s = ort_session(seg)
        for b in (1, 2):
            y = s.run(None, {"images": np.zeros((b, 3, SEG_IMGSZ, SEG_IMGSZ), np.float32)})
            assert [o.name for o in s.get_outputs()] == ["output0", "output1"]
            assert y[0].shape == (b, 4 + 5 + 32, (SEG_NET // 16) ** 2), y[0].shape
            assert y[1].shape == (b, 32, SEG_IMGSZ // 4, SEG_IMGSZ // 4), y[1].shape
        out["seg"] = {"output0": list(y[0].shape[1:]), "output1": list(y[1].shape[1:])}
    return out


def parity(module: Any, path: Path, imgsz: int, seed: int) -> float:
    """Max abs difference torch vs onnxruntime on a random input."""
    torch = _torch()
    x = np.random.default_rng(seed).random((2, 3, imgsz, imgsz), dtype=np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x))
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = ort_session(path).run(None, {"images": x})
    return max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref, got, strict=True))


# ------------------------------------------------------------------------------------------
# Held-out evaluation (numpy + onnxruntime only: measures the shipped artefact)
# ------------------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (aa[:, None] + ab[None, :] - inter + 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou]
    return np.array(keep, dtype=np.int64)


def decode_det(out: np.ndarray, conf: float, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """One image's [5, N] → (xyxy, scores) after NMS."""
    s = out[4]
    k = np.flatnonzero(s > conf)
    xywh = out[:4, k].T
    b = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    keep = nms(b, s[k], iou)
    return b[keep], s[k][keep]


def match(
    pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, thr: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy by score. Returns (pred matched bool, gt matched bool)."""
    pm = np.zeros(len(pred), bool)
    gm = np.zeros(len(gt), bool)
    if len(pred) == 0 or len(gt) == 0:
        return pm, gm
    ious = box_iou(pred, gt)
    for i in np.argsort(-scores, kind="stable"):
        row = np.where(gm, -1.0, ious[i])
        j = int(row.argmax())
        if row[j] >= thr:
            pm[i] = True
            gm[j] = True
    return pm, gm


def eval_det(
    path: Path, seeds: Sequence[int], size: tuple[int, int], conf: float = 0.25, iou: float = 0.5
) -> dict[str, Any]:
    sess = ort_session(path)
    tp = fp = 0
    clear_tot = clear_hit = all_tot = all_hit = 0
    slices = 0
    for seed in seeds:
        sc = generate_scene(seed, *size)
        img = np.asarray(sc.image)
        h, w = img.shape[:2]
        boxes = np.array([p.box for p in sc.plants], dtype=np.float32).reshape(-1, 4)
        vis = np.array([p.visibility for p in sc.plants], dtype=np.float32)
        xs = sorted({*range(0, w - DET_IMGSZ + 1, DET_IMGSZ), w - DET_IMGSZ})
        ys = sorted({*range(0, h - DET_IMGSZ + 1, DET_IMGSZ), h - DET_IMGSZ})
        batch, origins = [], []
        for y0 in ys:
            for x0 in xs:
                crop = img[y0 : y0 + DET_IMGSZ, x0 : x0 + DET_IMGSZ]
                batch.append(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)
                origins.append((x0, y0))
        outs = []
        for i in range(0, len(batch), 8):
            outs.append(sess.run(None, {"images": np.stack(batch[i : i + 8])})[0])
        out = np.concatenate(outs)
        for (x0, y0), o in zip(origins, out, strict=True):
            slices += 1
            pb, ps = decode_det(o, conf, iou)
            b = boxes - np.array([x0, y0, x0, y0], np.float32)
            cb = np.clip(b, 0, DET_IMGSZ)
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            carea = np.clip(cb[:, 2] - cb[:, 0], 0, None) * np.clip(cb[:, 3] - cb[:, 1], 0, None)
            frac = carea / np.maximum(area, 1e-6)
            present = frac >= 0.3
            gt = cb[present]
            clear = ((vis >= 0.6) & (frac >= 0.8))[present]
            pm, gm = match(pb, ps, gt)
            tp += int(pm.sum())
            fp += int((~pm).sum())
            clear_tot += int(clear.sum())
            clear_hit += int((gm & clear).sum())
            all_tot += len(gt)
            all_hit += int(gm.sum())
    return {
        "scenes": len(seeds),
        "scene_size": list(size),
        "slices": slices,
        "conf": conf,
        "nms_iou": iou,
        "match_iou": 0.5,
        "precision": round(tp / max(1, tp + fp), 4),
        "recall_clear": round(clear_hit / max(1, clear_tot), 4),
        "recall_all": round(all_hit / max(1, all_tot), 4),
        "clear_plants": clear_tot,
        "all_plants": all_tot,
        "predictions": tp + fp,
    }


def eval_seg(
    path: Path, jobs: Sequence[tuple[int, int, int]], conf: float = 0.30, iou: float = 0.5
) -> dict[str, Any]:
    sess = ort_session(path)
    n_gt = n_mask80 = n_box80 = n_cls_ok = n_found = fp = 0
    mask_ious: list[float] = []
    per_class: dict[str, list[int]] = {c: [0, 0] for c in SEG_NAMES}
    q = SEG_IMGSZ // 4
    for seed, w, h in jobs:
        sc = generate_scene(seed, w, h)
        lb, scale, px, py = letterbox_u8(np.asarray(sc.image), SEG_IMGSZ)
        x = lb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        o0, o1 = sess.run(None, {"images": x})
        o0, o1 = o0[0], o1[0]
        scores = o0[4:9]
        cls = scores.argmax(0)
        best = scores.max(0)
        k = np.flatnonzero(best > conf)
        xywh = o0[:4, k].T
        pb = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        keep = []
        for c in np.unique(cls[k]):  # class-aware NMS
            sel = np.flatnonzero(cls[k] == c)
            keep.extend(sel[nms(pb[sel], best[k][sel], iou)].tolist())
        keep = np.array(sorted(keep, key=lambda i: -best[k][i]), dtype=np.int64)
        pb, pc, _ps = pb[keep], cls[k][keep], best[k][keep]
        coef = o0[9:41, k][:, keep].T
        pm = []
        yy, xx = np.mgrid[0:q, 0:q]
        for b, cf in zip(pb, coef, strict=True):
            m = 1 / (1 + np.exp(-(cf @ o1.reshape(32, -1)).reshape(q, q))) > 0.5
            bb = b / 4
            m &= (xx + 0.5 >= bb[0]) & (xx + 0.5 < bb[2]) & (yy + 0.5 >= bb[1]) & (yy + 0.5 < bb[3])
            pm.append(m)
        gtm, gtb = [], []
        for c in sc.containers:
            poly = [((xv * scale + px) / 4, (yv * scale + py) / 4) for xv, yv in c.polygon]
            gtm.append(polygon_mask(poly, q))
            x1, y1, x2, y2 = c.bbox
            gtb.append([x1 * scale + px, y1 * scale + py, x2 * scale + px, y2 * scale + py])
        gtb_a = np.array(gtb, dtype=np.float32)
        used = np.zeros(len(pb), bool)
        for gi, c in enumerate(sc.containers):
            n_gt += 1
            per_class[c.class_name][1] += 1
            best_i, best_iou = -1, 0.0
            for pi, m in enumerate(pm):
                if used[pi]:
                    continue
                inter = float((m & gtm[gi]).sum())
                uni = float((m | gtm[gi]).sum())
                v = inter / max(uni, 1.0)
                if v > best_iou:
                    best_i, best_iou = pi, v
            mask_ious.append(best_iou)
            if best_i < 0 or best_iou < 0.5:
                continue
            used[best_i] = True
            n_found += 1
            n_mask80 += best_iou >= 0.8
            n_box80 += float(box_iou(pb[best_i : best_i + 1], gtb_a[gi : gi + 1])[0, 0]) >= 0.8
            ok = int(pc[best_i]) == c.class_id
            n_cls_ok += ok
            per_class[c.class_name][0] += ok
        fp += int((~used).sum())
    return {
        "scenes": len(jobs),
        "conf": conf,
        "nms_iou": iou,
        "containers": n_gt,
        "found_iou50": n_found,
        "mask_iou_ge_0.8": round(n_mask80 / max(1, n_gt), 4),
        "box_iou_ge_0.8": round(n_box80 / max(1, n_gt), 4),
        "mean_mask_iou": round(float(np.mean(mask_ious)) if mask_ious else 0.0, 4),
        "class_accuracy_of_found": round(n_cls_ok / max(1, n_found), 4),
        "class_correct_by_class": {k: f"{v[0]}/{v[1]}" for k, v in per_class.items()},
        "false_positives": fp,
    }


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def write_sidecar(path: Path, names: list[str], imgsz: int, task: str, build: dict[str, Any]):
    doc = {"names": names, "imgsz": imgsz, "task": task, "build": build}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def names_literal(names: list[str]) -> str:
    return "{" + ", ".join(f"{i}: {n!r}" for i, n in enumerate(names)) + "}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.models.build", description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="pipeline/models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="scene generation processes")
    ap.add_argument("--det-scenes", type=int, default=140)
    ap.add_argument("--seg-shared-scenes", type=int, default=60, help="det scenes reused by seg")
    ap.add_argument("--seg-scenes", type=int, default=90, help="extra scenes for seg only")
    ap.add_argument("--det-iters", type=int, default=1800)
    ap.add_argument("--seg-iters", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--det-loss",
        choices=["qfl", "focal"],
        default="focal",
        help="det score loss: focal loss with binary targets (shipped det.onnx), or IoU-aware "
        "quality focal loss (experimental: meant to cut duplicate boxes in dense seedbeds)",
    )
    ap.add_argument("--seg-batch", type=int, default=12)
    ap.add_argument("--eval-det-scenes", type=int, default=10)
    ap.add_argument("--eval-seg-scenes", type=int, default=40)
    ap.add_argument("--only", choices=["det", "seg", "both"], default="both")
    ap.add_argument("--eval-only", action="store_true", help="evaluate existing ONNX files")
    args = ap.parse_args(argv)

    torch = _torch()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    os.environ["BUILD_THREADS"] = str(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    command = "/work/main/.venv-build/bin/python -m pipeline.models.build " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    do_det = args.only in ("det", "both")
    do_seg = args.only in ("seg", "both")
    det_path, seg_path = out / "det.onnx", out / "seg.onnx"
    report: dict[str, Any] = {}  # this run's entries, merged into build_report.json at the end
    report_path = out / "build_report.json"
    timings: dict[str, float] = {}

    if not args.eval_only:
        base = args.seed * 1_000_000
        n_det = args.det_scenes
        jobs = scene_jobs(base, n_det, args.seg_shared_scenes, args.seg_scenes, do_det, do_seg)
        t = time.time()
        log(f"generating {len(jobs)} scenes (seeds {jobs[0][0]}..{jobs[-1][0]})")
        res = generate(jobs, args.workers)
        timings["generate_s"] = round(time.time() - t, 1)
        log(f"generated in {timings['generate_s']}s")
        det_scenes = [d for d, _ in res if d is not None]
        seg_scenes = [
            s
            for (seed, _, _, _), (_, s) in zip(jobs, res, strict=True)
            if seed - base < args.seg_shared_scenes or seed - base >= SEG_EXTRA_OFFSET
        ]
        del res
        meta_common = {
            "author": "plantpipe",
            "license": "Apache-2.0",
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "version": "plantpipe-synth-1",
        }
        if do_det:
            t = time.time()
            net = train_det(
                det_scenes, args.det_iters, args.batch, args.seed, quality=args.det_loss == "qfl"
            )
            timings["det_train_s"] = round(time.time() - t, 1)
            exp = make_det_export(net)
            meta = {
                **meta_common,
                "description": "plantpipe plant detector (synthetic-trained, anchor-free)",
                "task": "detect",
                "names": names_literal(DET_NAMES),
                "imgsz": f"[{DET_IMGSZ}, {DET_IMGSZ}]",
                "stride": str(DET_STRIDE),
                "batch": "dynamic",
            }
            export_onnx(exp, DET_IMGSZ, det_path, ["output0"], meta)
            report["det_parity_max_abs"] = parity(exp, det_path, DET_IMGSZ, args.seed)
            report["det_params"] = sum(p.numel() for p in net.parameters())
            report["det_train"] = {
                "scenes": n_det,
                "scene_seeds": [base, base + n_det - 1],
                "iters": args.det_iters,
                "batch": args.batch,
                "crop": 256,
                "score_loss": args.det_loss,
                "wall_s": timings["det_train_s"],
            }
        if do_seg:
            t = time.time()
            net = train_seg(seg_scenes, args.seg_iters, args.seg_batch, args.seed)
            timings["seg_train_s"] = round(time.time() - t, 1)
            exp = make_seg_export(net)
            meta = {
                **meta_common,
                "description": "plantpipe container segmenter (synthetic-trained)",
                "task": "segment",
                "names": names_literal(SEG_NAMES),
                "imgsz": f"[{SEG_IMGSZ}, {SEG_IMGSZ}]",
                "stride": str(SEG_STRIDE),
                "batch": "dynamic",
            }
            export_onnx(exp, SEG_IMGSZ, seg_path, ["output0", "output1"], meta)
            report["seg_parity_max_abs"] = parity(exp, seg_path, SEG_IMGSZ, args.seed)
            report["seg_params"] = sum(p.numel() for p in net.parameters())
            report["seg_train"] = {
                "scenes": len(seg_scenes),
                "scene_seeds": (
                    f"{base}..{base + args.seg_shared_scenes - 1} (2000x1500) + "
                    f"{base + SEG_EXTRA_OFFSET}..{base + SEG_EXTRA_OFFSET + args.seg_scenes - 1}"
                    f" ({', '.join(f'{w}x{h}' for w, h in SEG_SHAPES)})"
                ),
                "iters": args.seg_iters,
                "batch": args.seg_batch,
                "net_input": SEG_NET,
                "wall_s": timings["seg_train_s"],
            }

    report["shapes"] = verify_shapes(
        det_path if det_path.exists() else None, seg_path if seg_path.exists() else None
    )
    log(f"onnxruntime shapes ok: {report['shapes']}")
    t = time.time()
    if do_det and det_path.exists():
        ev = [HELDOUT_BASE + i for i in range(args.eval_det_scenes)]
        report["det_eval"] = eval_det(det_path, ev, (2000, 1500))
        log(f"det held-out 2000x1500: {report['det_eval']}")
        ev4 = [HELDOUT_BASE + 500 + i for i in range(max(1, args.eval_det_scenes // 4))]
        report["det_eval_4000"] = eval_det(det_path, ev4, (4000, 3000))
        log(f"det held-out 4000x3000: {report['det_eval_4000']}")
    if do_seg and seg_path.exists():
        shapes = [(2000, 1500), (1500, 2000), (4000, 3000), (2000, 2000), (2400, 1350)]
        jobs = [
            (HELDOUT_BASE + 1000 + i, *shapes[i % len(shapes)]) for i in range(args.eval_seg_scenes)
        ]
        report["seg_eval"] = eval_seg(seg_path, jobs)
        log(f"seg held-out: {report['seg_eval']}")
    timings["eval_s"] = round(time.time() - t, 1)
    timings["total_s"] = round(time.time() - t_all, 1)

    build_common = {
        "command": command,
        "seed": args.seed,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    for kind, path, names, imgsz, task in (
        ("det", det_path, DET_NAMES, DET_IMGSZ, "detect"),
        ("seg", seg_path, SEG_NAMES, SEG_IMGSZ, "segment"),
    ):
        if not path.exists() or (kind == "det" and not do_det) or (kind == "seg" and not do_seg):
            continue
        build = {
            **build_common,
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "train": report.get(f"{kind}_train"),
            "heldout": report.get(f"{kind}_eval"),
        }
        write_sidecar(out / f"{kind}.json", names, imgsz, task, build)
        report[f"{kind}_sha256"] = build["sha256"]
        report[f"{kind}_bytes"] = build["bytes"]
    merged: dict[str, Any] = json.loads(report_path.read_text()) if report_path.exists() else {}
    runs = merged.get("runs", [])
    merged.update(report)
    merged["runs"] = [*runs, {"command": command, "only": args.only, "timings": timings}]
    report_path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    log(f"done in {timings['total_s']}s: {json.dumps(timings)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
