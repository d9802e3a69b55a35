"""The two compact anchor-free CNNs (PyTorch) and the grid decoding their heads share.

* :class:`DetNet`: stride-8 detector, per cell an objectness logit and ``l, t, r, b``
  distances (``exp(x) · DET_DIST_SCALE`` px).
* :class:`SegNet`: runs at 256 px; stride-16 head (box distances, 5 class logits, 32 mask
  coefficients) and stride-4 prototypes.

:mod:`training.export` wraps them into graphs with the Ultralytics output layouts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.layout import NUM_MASK_COEFFS, SEG_NAMES


def cbs(i: int, o: int, s: int = 1, k: int = 3) -> nn.Sequential:
    """Conv, batch norm, SiLU."""
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

    def forward(self, x: Tensor) -> Tensor:
        y0 = self.a(x)
        y1 = self.pool(y0)
        y2 = self.pool(y1)
        y3 = self.pool(y2)
        out: Tensor = self.b(torch.cat([y0, y1, y2, y3], 1))
        return out


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
        bias = self.out.bias
        assert bias is not None
        nn.init.constant_(bias, 0.0)
        with torch.no_grad():
            bias[0] = -4.6  # prior 0.01

    def forward(self, x: Tensor) -> Tensor:
        c3 = self.c3(x)
        c4 = self.c4(c3)
        c5 = self.spp(self.c5(c4))
        p = self.f4(F.interpolate(self.l5(c5), scale_factor=2.0) + self.l4(c4))
        p = self.f3(F.interpolate(p, scale_factor=2.0) + self.l3(c3))
        out: Tensor = self.out(self.head(p))  # (B, 5, H/8, W/8): logit, l, t, r, b
        return out


class SegNet(nn.Module):
    """Runs at 256 px: stride-16 head (box, 5 classes, 32 coeffs) + stride-4 prototypes."""

    def __init__(self) -> None:
        super().__init__()
        nc = len(SEG_NAMES)
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
        self.out = nn.Conv2d(80, 4 + nc + NUM_MASK_COEFFS, 1)
        self.p3 = nn.Conv2d(64, 48, 1)
        self.pf3 = cbs(48, 48)
        self.pf2 = nn.Sequential(cbs(48, 48), cbs(48, 48))
        self.proto = nn.Conv2d(48, NUM_MASK_COEFFS, 1)
        bias = self.out.bias
        assert bias is not None
        nn.init.constant_(bias, 0.0)
        with torch.no_grad():
            bias[4 : 4 + nc] = -4.6

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c2 = self.c2(x)
        c3 = self.c3(c2)
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        c6 = self.c6(c5)
        p5 = self.f5(F.interpolate(self.l6(c6), scale_factor=2.0) + self.l5(c5))
        p4 = self.f4(F.interpolate(p5, scale_factor=2.0) + self.l4(c4))
        raw: Tensor = self.out(self.head(p4))  # (B, 41, H/16, W/16)
        q = self.pf3(F.interpolate(self.p3(p4), scale_factor=2.0) + self.l3(c3))
        q = self.pf2(F.interpolate(q, scale_factor=2.0) + self.l2(c2))
        protos: Tensor = self.proto(q)  # (B, 32, H/4, W/4)
        return raw, protos


def grid_centers(gh: int, gw: int, stride: float) -> Tensor:
    """``(gh·gw, 2)`` cell centres ``(x, y)`` in pixels, row-major."""
    ys, xs = torch.meshgrid(
        torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([(xs.reshape(-1) + 0.5) * stride, (ys.reshape(-1) + 0.5) * stride], 1)


def decode_ltrb(raw_ltrb: Tensor, centers: Tensor, scale: float) -> Tensor:
    """(B, 4, N) raw distances → (B, N, 4) xyxy (for the box loss; exported graphs decode to
    the runtime's ``cx, cy, w, h`` rows in :mod:`training.export`)."""
    d = torch.exp(raw_ltrb.clamp(-5.0, 5.0)) * scale  # (B,4,N)
    cx, cy = centers[:, 0], centers[:, 1]
    return torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], dim=2)
