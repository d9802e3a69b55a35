"""Assignment, losses and the two training loops (PyTorch, CPU, deterministic per seed).

FCOS-style centre sampling assigns each grid cell to at most one ground-truth box; the score
is trained with focal loss (or IoU-aware quality focal loss, ``quality=True``), boxes with
GIoU loss, seg masks with BCE inside the ground-truth box on at most ``MASK_POS`` cells per
container. The GIoU here is a differentiable torch loss; evaluation of exported models uses
the runtime's numpy IoU (:mod:`training.evaluate`).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from training.augment import det_sample, mask_boxes, seg_sample
from training.data import DetScene, SegScene
from training.layout import (
    DET_DIST_SCALE,
    DET_STRIDE,
    NUM_MASK_COEFFS,
    SEG_DIST_SCALE,
    SEG_HEAD_STRIDE,
    SEG_NAMES,
    SEG_NET,
)
from training.network import DetNet, SegNet, decode_ltrb, grid_centers
from training.warmstart import freeze_norms

MASK_POS = 4
#: Peak learning rates: training from random weights, and fine-tuning a shipped model.
SCRATCH_LR = 2e-3
FINE_TUNE_LR = 5e-4
LOG_EVERY = 100


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def giou(a: Tensor, b: Tensor) -> Tensor:
    """Generalised IoU of matching rows of two ``(n, 4)`` xyxy tensors."""
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


def focal(logits: Tensor, targets: Tensor, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pt = p * targets + (1 - p) * (1 - targets)
    w = alpha * targets + (1 - alpha) * (1 - targets)
    return w * ce * (1 - pt) ** gamma


def qfocal(logits: Tensor, targets: Tensor, beta: float = 2.0) -> Tensor:
    """Quality focal loss: BCE towards a soft (IoU) target, scaled by |p - t|^beta."""
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return ce * (p - targets).abs() ** beta


def assign(
    centers: Tensor, boxes: Tensor, ignore: Tensor, rmin: float, rfrac: float
) -> tuple[Tensor, Tensor]:
    """Centre sampling. Returns (assigned gt index or -1, ignore mask) per cell."""
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
    return idx, ign


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
    init: DetNet | None = None,
    lr: float = SCRATCH_LR,
) -> DetNet:
    """Train the detector on ``size``-px crops of ``scenes`` (from ``init``'s weights, its
    batch norms frozen, when given: :mod:`training.warmstart`)."""
    torch.manual_seed(seed)
    net = DetNet() if init is None else init
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    rng = np.random.default_rng(seed + 11)
    pil: list[Image.Image] = []
    for s in scenes:  # crops are cut from the PIL copy: hold each photo once, not twice
        pil.append(Image.fromarray(s.image))
        s.image = s.image[:0, :0]
    g = size // DET_STRIDE
    centers = grid_centers(g, g, DET_STRIDE)
    net.train()
    if init is not None:
        freeze_norms(net)
    t0 = time.time()
    run = {"cls": 0.0, "box": 0.0, "npos": 0.0}
    for it in range(iters):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(it, iters, lr)
        xs, gts, igs = [], [], []
        for _ in range(batch):
            x, b, ig = det_sample(rng, scenes, pil, size)
            xs.append(x)
            gts.append(torch.from_numpy(b))
            igs.append(torch.from_numpy(ig))
        xb = torch.from_numpy(np.stack(xs))
        raw = net(xb).flatten(2)  # (B,5,N)
        logits = raw[:, 0]
        boxes = decode_ltrb(raw[:, 1:5], centers, DET_DIST_SCALE)  # (B,N,4)
        tcls = torch.zeros_like(logits)
        valid = torch.ones_like(logits, dtype=torch.bool)
        pb, tb, npos_i = [], [], []
        for bi in range(batch):
            idx, ign = assign(centers, gts[bi], igs[bi], rmin=0.72 * DET_STRIDE, rfrac=0.2)
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
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        run["cls"] = 0.98 * run["cls"] + 0.02 * float(lcls.detach())
        run["box"] = 0.98 * run["box"] + 0.02 * float(lbox.detach())
        run["npos"] = 0.98 * run["npos"] + 0.02 * npos
        if it % LOG_EVERY == 0 or it == iters - 1:
            el = time.time() - t0
            log(
                f"det it {it}/{iters} cls {run['cls']:.4f} box {run['box']:.4f} "
                f"npos {run['npos']:.0f} {el:.0f}s (eta {el / (it + 1) * (iters - it - 1):.0f}s)"
            )
    net.eval()
    return net


def train_seg(
    scenes: list[SegScene],
    iters: int,
    batch: int,
    seed: int,
    init: SegNet | None = None,
    lr: float = SCRATCH_LR,
) -> SegNet:
    """Train the segmenter on whole letterboxed, pooled scenes (from ``init``'s weights, its
    batch norms frozen, when given)."""
    torch.manual_seed(seed + 1)
    net = SegNet() if init is None else init
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    rng = np.random.default_rng(seed + 23)
    g = SEG_NET // SEG_HEAD_STRIDE
    centers = grid_centers(g, g, SEG_HEAD_STRIDE)
    nc = len(SEG_NAMES)
    mres = SEG_NET // 2  # mask loss resolution (128)
    net.train()
    if init is not None:
        freeze_norms(net)
    t0 = time.time()
    run = {"cls": 0.0, "box": 0.0, "mask": 0.0}
    for it in range(iters):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(it, iters, lr)
        xs, boxes_l, masks_l, cls_l = [], [], [], []
        for _ in range(batch):
            x, m, c = seg_sample(rng, scenes)
            xs.append(x)
            boxes_l.append(torch.from_numpy(mask_boxes(m)))
            small = m.reshape(len(m), mres, 2, mres, 2).mean(axis=(2, 4)) >= 0.5
            masks_l.append(torch.from_numpy(small.astype(np.float32)))
            cls_l.append(torch.from_numpy(c))
        xb = torch.from_numpy(np.stack(xs))
        raw, protos = net(xb)
        raw = raw.flatten(2)  # (B,41,N)
        pboxes = decode_ltrb(raw[:, 0:4], centers, SEG_DIST_SCALE)
        logits = raw[:, 4 : 4 + nc].transpose(1, 2)  # (B,N,5)
        coefs = raw[:, 4 + nc : 4 + nc + NUM_MASK_COEFFS].transpose(1, 2)  # (B,N,32)
        up = F.interpolate(protos, size=(mres, mres), mode="bilinear", align_corners=False)
        tcls = torch.zeros_like(logits)
        pb, tb, lm, npos, nmask = [], [], [], 0.0, 0.0
        ys = torch.arange(mres, dtype=torch.float32).view(1, mres, 1) + 0.5
        xs_ = torch.arange(mres, dtype=torch.float32).view(1, 1, mres) + 0.5
        for bi in range(batch):
            gtb = boxes_l[bi]
            idx, _ = assign(centers, gtb, torch.zeros((0, 4)), rmin=12.0, rfrac=0.25)
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
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        run["cls"] = 0.98 * run["cls"] + 0.02 * float(lcls.detach())
        run["box"] = 0.98 * run["box"] + 0.02 * float(lbox.detach())
        run["mask"] = 0.98 * run["mask"] + 0.02 * float(lmask.detach())
        if it % LOG_EVERY == 0 or it == iters - 1:
            el = time.time() - t0
            log(
                f"seg it {it}/{iters} cls {run['cls']:.4f} box {run['box']:.4f} "
                f"mask {run['mask']:.4f} {el:.0f}s (eta {el / (it + 1) * (iters - it - 1):.0f}s)"
            )
    net.eval()
    return net
