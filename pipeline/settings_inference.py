"""The settings an inference pool process reads, declared once (see :class:`InferenceSettings`);
``pipeline.settings.Settings`` inherits them, so each is read from its ``PLANTPIPE_``
variable like every other setting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from pipeline import settings_rules as rules


class InferenceSettings(BaseModel):
    """The settings an inference pool process reads, declared once: :class:`Settings` inherits
    them (each is its ``PLANTPIPE_`` variable, with its range) and
    ``pipeline.inference.config.InferenceConfig`` carries them, as they are, to the pool's
    processes — a field added here reaches both, with nothing to copy."""

    max_pixels: int = Field(
        100_000_000,
        ge=1,
        le=1_000_000_000,
        description="largest accepted photo in pixels (width × height, as its header declares): "
        "checked before any worker starts, so a decompression bomb is refused unread",
    )

    # --- inference -----------------------------------------------------------------------
    pool_processes: rules.Auto = Field(
        0,
        description="ONNX Runtime processes per gpu worker (0 = one per CUDA device id with "
        "onnxruntime-gpu installed, else one single-threaded process per CPU core)",
    )
    device_ids: list[Annotated[int, Field(ge=0, le=1023)]] = Field(
        default_factory=lambda: [0], min_length=1, description="CUDA ids, round robin"
    )
    providers: list[rules.Provider] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        min_length=1,
        description="ONNX Runtime providers in preference order (not set: CUDA only when "
        "onnxruntime-gpu is installed)",
    )
    intra_op_threads: rules.Auto = Field(
        0,
        description="ONNX Runtime intra-op threads per process (0 = ONNX Runtime's default, "
        "or cores ÷ processes when several CPU processes share the cores)",
    )
    seg_model_path: Path | None = Field(None, description="segmentation ONNX (None = bundled)")
    seg_class_names: list[rules.NonEmpty] | None = Field(
        None, min_length=1, description="class names of seg model"
    )
    seg_input_size: rules.Side = Field(1024, description="segmentation input side")
    seg_conf: rules.Share = Field(0.30, description="segmentation confidence threshold")
    seg_iou: rules.Share = Field(0.50, description="segmentation NMS IoU")
    det_model_path: Path | None = Field(None, description="detection ONNX (None = bundled)")
    det_class_names: list[rules.NonEmpty] | None = Field(
        None, min_length=1, description="class names of det model"
    )
    det_input_size: rules.Side = Field(512, description="detection input side (= slice size)")
    det_conf: rules.Share = Field(0.25, description="detection confidence threshold")
    det_iou: rules.Share = Field(
        0.35,
        description="detection NMS IoU inside one slice (0.35: fewer shifted double boxes than "
        "0.5, bench/ACCURACY.md)",
    )
    det_max_per_slice: rules.Count = Field(
        300, le=100_000, description="most detections kept per slice after NMS (best score first)"
    )
    slice_size: int = Field(512, ge=16, le=8192, description="slice width and height")
    slice_overlap: float = Field(0.25, ge=0, le=0.9, description="slice overlap ratio both ways")
    merge_ios: rules.Share = Field(
        0.85,
        description="GREEDYNMM intersection-over-smaller threshold (0.85: 0.5 merged neighbouring "
        "plants of dense beds, bench/ACCURACY.md)",
    )
    merge_within_slice: bool = Field(
        True,
        description="GREEDYNMM also merges boxes of one slice (false: only copies from "
        "overlapping slices)",
    )
    merge_large_px: rules.Pixels | None = Field(
        64.0,
        description="two boxes both at least this long merge at merge_ios_large (a large "
        "plant comes out as several leaf-cluster boxes); None = merge_ios for all",
    )
    merge_ios_large: rules.Share = Field(0.5, description="GREEDYNMM IoS threshold of large boxes")
    det_batch_size: rules.Count = Field(16, le=1024, description="slices per device batch")
    slice_edge_margin_px: Annotated[float, Field(ge=0, le=1000)] | None = Field(
        2.0,
        description="a box ending this close to an internal slice edge, held whole by the "
        "neighbour slice, is a fragment and dropped (None = keep every box, as SAHI)",
    )
    rescale_slices: bool = Field(
        True,
        description="a measuring pass over a quarter of each region's slices gives its median "
        "plant (as the detector sees it); outside rescale_min_px..rescale_max_px the region "
        "is detected in slices sized to bring it in range (pipeline/vision/scale.py)",
    )
    rescale_min_px: rules.Pixels = Field(
        26.0, description="median plant side (detector input px) below which slices shrink"
    )
    rescale_max_px: rules.Pixels = Field(
        80.0, description="median plant side (detector input px) above which slices grow"
    )
    rescale_small_target_px: rules.Pixels = Field(
        30.0, description="median plant side that shrunk slices aim at (input px)"
    )
    rescale_large_target_px: rules.Pixels = Field(
        60.0, description="median plant side that grown slices aim at (input px)"
    )
    rescale_min_detections: rules.Count = Field(
        8, le=100_000, description="detections needed to measure a region's plant size"
    )
    rescale_small_gain: float = Field(
        1.1,
        ge=1.0,
        le=100,
        description="a region detected again in smaller slices keeps that pass only when it "
        "finds at least this many times the plants of the first",
    )
    segment_merge_overlap: rules.Share | None = Field(
        0.3,
        description="container masks overlapping by this share of the smaller one are one "
        "container (best score's class), other overlaps go to the better score; None = "
        "neither (each instance a segment, as the original pipeline)",
    )
    count_unassigned: bool = Field(
        True, description="count detections outside every segment (segment index none)"
    )
    segment_crop_pad: float = Field(
        0.03,
        ge=0,
        le=0.5,
        description="detection slices cover each segment's crop grown by this share of the "
        "photo's longer side (plants just outside an imprecise mask)",
    )
    unassigned_slice_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="extra slices over photo areas outside every segment crop, where a slice "
        "is at least this share uncovered (1 = none)",
    )

    # --- band estimation -----------------------------------------------------------------
    bands: rules.Count = Field(4, le=64, description="horizontal bands per segment")
    default_plant_area_px: Annotated[float, Field(gt=0, le=1e8)] = Field(
        2500.0, description="plant area without calibration"
    )
    min_calibration_detections: rules.Count = Field(
        10, le=100_000, description="detections needed to calibrate"
    )
    plant_area_factor: Annotated[float, Field(gt=0, le=10)] = Field(
        0.9, description="estimate = area / (plant area × factor)"
    )
    plant_area_fallback: bool = Field(
        True,
        description="a band too poor in detections to calibrate uses the plant area of its "
        "segment's detections, else the photo's, before default_plant_area_px",
    )
    plant_colours: bool = Field(
        True,
        description="vegetation for band estimation from the colours under the photo's own "
        "detections against its containers' floor (any foliage colour; false = the fixed "
        "green rule)",
    )
    min_plant_support: float = Field(
        0.1,
        ge=0,
        le=1,
        description="a detection with plant colours under less than this share of its "
        "centre is not counted (a wall crossing, an empty cell, gravel); 0 = count every box",
    )

    # --- thumbnails (made with the inference) ---------------------------------------------
    thumbnail_px: int = Field(300, ge=16, le=4096, description="thumbnail longest side")
    thumbnail_quality: int = Field(85, ge=1, le=100, description="thumbnail JPEG quality")
