"""Default ONNX models (``det.onnx``, ``seg.onnx`` + JSON sidecars) and their build script.

``python -m pipeline.models.build`` (build-time only, needs PyTorch) regenerates them from the
project's own synthetic scenes; see ``README_MODELS.md``. Nothing here imports PyTorch.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DET_MODEL = MODELS_DIR / "det.onnx"
SEG_MODEL = MODELS_DIR / "seg.onnx"

__all__ = ["DET_MODEL", "MODELS_DIR", "SEG_MODEL"]
