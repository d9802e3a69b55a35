"""Default ONNX models (``det.onnx``, ``seg.onnx`` + JSON sidecars and ``build_report.json``).

Data only: the runtime loads these files. They are built by the top-level ``training``
package (``python -m training.build --seed 0 --out pipeline/models`` from a checkout, with the
``[train]`` extra: PyTorch), which is not part of the installed package; see
``README_MODELS.md``. Nothing here imports PyTorch.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DET_MODEL = MODELS_DIR / "det.onnx"
SEG_MODEL = MODELS_DIR / "seg.onnx"

__all__ = ["DET_MODEL", "MODELS_DIR", "SEG_MODEL"]
