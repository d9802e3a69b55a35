"""Picklable inference configuration, built from ``Settings`` and sent to pool processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, model_validator

from pipeline.settings import Settings
from pipeline.settings_inference import InferenceSettings
from pipeline.settings_rules import resolve_auto

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUNDLED_SEG_MODEL = MODELS_DIR / "seg.onnx"
BUNDLED_DET_MODEL = MODELS_DIR / "det.onnx"


class InferenceConfig(InferenceSettings):
    """Everything a pool process needs to build a ``PhotoAnalyzer`` (no live objects): the
    inference settings as ``Settings`` holds them (declared once, in ``InferenceSettings``),
    plus ``warmup``. Built directly (tests, ``pipeline.evaluation``), "0 = auto" in
    ``pool_processes``/``intra_op_threads`` resolves as ``Settings`` resolves it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warmup: bool = True

    @model_validator(mode="after")
    def _resolve_auto(self) -> InferenceConfig:
        values = {**self.__dict__, "gpu_max_jobs": 1}  # resolve_auto also resolves that one
        for name, value in resolve_auto(values, self.model_fields_set).items():
            if name in type(self).model_fields:
                object.__setattr__(self, name, value)  # the model is frozen after this
        return self

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> InferenceConfig:
        """The pool's configuration from ``settings`` (every inference setting, none left
        out); ``changes``: fields to override (e.g. ``warmup=False``)."""
        values = settings.model_dump(include=set(InferenceSettings.model_fields))
        return cls.model_validate({**values, **changes})

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
