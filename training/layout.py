"""Geometry and names of the two default models (shared by every training module).

``NUM_MASK_COEFFS`` and the letterbox grey come from the runtime decoder, so the exported
layouts cannot drift from what :mod:`pipeline.inference.yolo` reads.
"""

from __future__ import annotations

from typing import Final

from pipeline.inference.yolo import NUM_MASK_COEFFS, PAD_VALUE
from pipeline.synth import CONTAINER_CLASSES, PLANT_CLASS

__all__ = [
    "DET_DIST_SCALE",
    "DET_IMGSZ",
    "DET_NAMES",
    "DET_STRIDE",
    "HELDOUT_BASE",
    "NUM_MASK_COEFFS",
    "PAD",
    "SEG_DIST_SCALE",
    "SEG_EXTRA_OFFSET",
    "SEG_HEAD_STRIDE",
    "SEG_IMGSZ",
    "SEG_NAMES",
    "SEG_NET",
    "SEG_POOL",
    "SEG_SHAPES",
    "SEG_STRIDE",
    "VARIANT_OFFSET",
    "VARIANT_STRIDE",
]

DET_NAMES: Final = [PLANT_CLASS]
SEG_NAMES: Final = list(CONTAINER_CLASSES)
DET_IMGSZ: Final = 512
SEG_IMGSZ: Final = 1024
SEG_POOL: Final = 4  # the seg network runs at SEG_IMGSZ / SEG_POOL
SEG_NET: Final = SEG_IMGSZ // SEG_POOL
DET_STRIDE: Final = 8
SEG_HEAD_STRIDE: Final = 16  # in SEG_NET pixels
SEG_STRIDE: Final = SEG_HEAD_STRIDE * SEG_POOL  # in 1024-px input pixels
PAD: Final = round(PAD_VALUE * 255)  # the runtime's letterbox grey, 114
DET_DIST_SCALE: Final = 16.0
SEG_DIST_SCALE: Final = 32.0
HELDOUT_BASE: Final = 900_000_000  # held-out seeds, disjoint from every training seed
SEG_EXTRA_OFFSET: Final = 500_000
# scenes of the other generators (wide, conditions): base + VARIANT_OFFSET + k * VARIANT_STRIDE
VARIANT_OFFSET: Final = 600_000
VARIANT_STRIDE: Final = 20_000
SEG_SHAPES: Final = [(1024, 768), (768, 1024), (1024, 1024), (1024, 576), (1024, 683), (900, 1200)]
