"""Picklable inference configuration, built from ``Settings`` and sent to pool processes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.settings import Settings

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUNDLED_SEG_MODEL = MODELS_DIR / "seg.onnx"
BUNDLED_DET_MODEL = MODELS_DIR / "det.onnx"


class InferenceConfig(BaseModel):
    """Everything a pool process needs to build a ``PhotoAnalyzer`` (no live objects)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # models
    seg_model_path: Path | None = None
    seg_class_names: list[str] | None = None
    seg_input_size: int = 1024
    seg_conf: float = 0.30
    seg_iou: float = 0.50
    det_model_path: Path | None = None
    det_class_names: list[str] | None = None
    det_input_size: int = 512
    det_conf: float = 0.25
    det_iou: float = 0.35
    det_max_per_slice: int = Field(300, ge=1)
    # slicing / merge
    slice_size: int = Field(512, ge=16)
    slice_overlap: float = Field(0.25, ge=0, lt=1)
    merge_ios: float = 0.85
    merge_within_slice: bool = True
    merge_large_px: float | None = 64.0
    merge_ios_large: float = 0.5
    det_batch_size: int = Field(16, ge=1)
    slice_edge_margin_px: float | None = 2.0
    # slice size from the measured plant size (pipeline.vision.scale)
    rescale_slices: bool = True
    rescale_min_px: float = 26.0
    rescale_max_px: float = 80.0
    rescale_small_target_px: float = 30.0
    rescale_large_target_px: float = 60.0
    rescale_min_detections: int = Field(8, ge=1)
    rescale_small_gain: float = Field(1.1, ge=1.0)
    # container segments / detections outside them
    segment_merge_overlap: float | None = 0.3
    count_unassigned: bool = True
    segment_crop_pad: float = Field(0.03, ge=0, le=0.5)
    unassigned_slice_fraction: float = Field(0.5, ge=0, le=1)
    # runtime
    pool_processes: int = Field(1, ge=1)
    device_ids: list[int] = Field(default_factory=lambda: [0])
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    intra_op_threads: int = 0
    warmup: bool = True
    # band estimation
    bands: int = Field(4, ge=1)
    default_plant_area_px: float = 2500.0
    min_calibration_detections: int = 10
    plant_area_factor: float = 0.9
    plant_area_fallback: bool = True
    plant_colours: bool = True
    min_plant_support: float = Field(0.1, ge=0, le=1)
    # thumbnails
    thumbnail_px: int = 300
    thumbnail_quality: int = 85
    max_pixels: int | None = Field(None, description="decode limit (None = decode_image default)")

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceConfig:
        fields = set(cls.model_fields) & set(type(settings).model_fields)
        return cls(**{name: getattr(settings, name) for name in fields})

    def model_file(self, kind: Literal["detect", "segment"]) -> Path:
        """The model file to load for ``kind``; raises a clear ``FileNotFoundError``."""
        if kind == "segment":
            configured, bundled, var = self.seg_model_path, BUNDLED_SEG_MODEL, "SEG_MODEL_PATH"
            what = "segmentation (YOLO-seg)"
        else:
            configured, bundled, var = self.det_model_path, BUNDLED_DET_MODEL, "DET_MODEL_PATH"
            what = "detection (YOLO detect)"
        path = Path(configured).expanduser() if configured is not None else bundled
        if not path.is_file():
            if configured is not None:
                raise FileNotFoundError(
                    f"{what} model not found at {path} (from PLANTPIPE_{var}); point "
                    f"PLANTPIPE_{var} at an Ultralytics ONNX export"
                )
            raise FileNotFoundError(
                f"bundled {what} model {path} does not exist: build the bundled models "
                f"(see pipeline/models/, which also writes the {path.stem}.json sidecar with "
                f"class names) or set PLANTPIPE_{var} to an Ultralytics ONNX export "
                "(class names from its metadata, a <model>.json sidecar, or "
                f"PLANTPIPE_{var.split('_')[0]}_CLASS_NAMES)"
            )
        return path

    def check_models(self) -> tuple[Path | None, Path]:
        """(segmentation, detection) model files; raises FileNotFoundError if one is missing.

        Only when no segmentation model is configured *and* none is bundled does the
        segmentation come back as None: every photo is then analysed as one segment.
        """
        seg: Path | None
        if self.seg_model_path is None and not BUNDLED_SEG_MODEL.is_file():
            seg = None
        else:
            seg = self.model_file("segment")
        return seg, self.model_file("detect")
