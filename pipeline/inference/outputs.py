"""What inference returns across the pool boundary (light: no onnxruntime import)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pipeline.vision.types import PhotoAnalysis


class AnalysisOutput(BaseModel):
    """One photo's inference result, kept small: no masks, no pixels except the thumbnail.

    The cpu side re-renders visualizations from the original bytes plus ``analysis``
    (segment polygons and boxes, detection boxes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    analysis: PhotoAnalysis
    thumbnail_jpeg: bytes
    mime: str
    orig_width: int
    orig_height: int
    exif_orientation: int
    slices: int = 0
