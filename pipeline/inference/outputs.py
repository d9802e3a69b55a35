"""What inference returns across the pool boundary (light: no onnxruntime import)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pipeline.vision.types import PhotoAnalysis


class AnalysisOutput(BaseModel):
    """One photo's inference result, kept small: no pixels except the thumbnail, and one
    mask, the vegetation band estimation counted, as a full-frame 1-bit PNG
    (``vegetation_png``, ``b""`` when there is none).

    The cpu side renders the visualization from the original bytes, ``analysis`` (segment
    polygons and boxes, detection boxes) and that PNG.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    analysis: PhotoAnalysis
    thumbnail_jpeg: bytes
    vegetation_png: bytes = b""
    mime: str
    orig_width: int
    orig_height: int
    exif_orientation: int
    slices: int = 0
