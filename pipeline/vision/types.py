"""Result models of the vision stages. They cross process boundaries (pool → worker → Redis)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ContainerType = Literal["segment", "box", "plug", "almacigo"]

# Class names of a segmentation model mapped to container types (original pipeline's mapping).
CONTAINER_TYPE_BY_CLASS: dict[str, ContainerType] = {
    "claro-cajon": "segment",
    "segmento": "segment",
    "segment": "segment",
    "cajon": "box",
    "box": "box",
    "plug": "plug",
    "almacigo": "almacigo",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Segment(_Frozen):
    """One container found by segmentation, in photo pixel coordinates."""

    index: int
    class_name: str
    container_type: ContainerType
    confidence: float
    bbox: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2")
    polygon: list[tuple[float, float]] = Field(default_factory=list)
    area_px: int = 0


class Detection(_Frozen):
    """One plant found by sliced detection, in photo pixel coordinates."""

    cx: float
    cy: float
    w: float
    h: float
    confidence: float
    class_id: int
    class_name: str
    segment_index: int | None = None


class BandEstimate(_Frozen):
    """One horizontal band of a segment, all areas in segment-local pixels."""

    band: int
    y0: int
    y1: int
    detections: int
    residual_px: int
    floor_suppressed_px: int
    fringe_px: int = 0
    vegetation_px: int
    plant_area_px: float
    calibrated: bool
    estimated: int


class SegmentEstimation(_Frozen):
    segment_index: int
    bands: list[BandEstimate]
    estimated: int


class PhotoAnalysis(_Frozen):
    """Everything infer_photo learns about one photo."""

    width: int
    height: int
    segments: list[Segment]
    detections: list[Detection]
    estimations: list[SegmentEstimation]
    provider: str
    timings_ms: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(
        default_factory=list,
        description="what may make this photo's counts unreliable (one sentence each)",
    )

    @property
    def total_detected(self) -> int:
        return len(self.detections)

    @property
    def total_estimated(self) -> int:
        return sum(e.estimated for e in self.estimations)
