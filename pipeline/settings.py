"""Every tunable of plantpipe, read from the environment (prefix ``PLANTPIPE_``; lists as
JSON), each with a range or a set of values; the rules, the one-line errors and README's table
are in ``pipeline.settings_rules``. Child processes get theirs from :meth:`Settings.to_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from pipeline import settings_rules as rules
from pipeline.errors import InvalidSettings
from pipeline.settings_rules import DAY, MIB


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


class Settings(BaseSettings, InferenceSettings):
    """plantpipe configuration. Defaults are those of the original pipeline."""

    model_config = SettingsConfigDict(
        env_prefix="PLANTPIPE_", extra="ignore", frozen=True, env_parse_none_str="null"
    )

    def __init__(self, **values: Any) -> None:
        """A bad value raises InvalidSettings: one line naming variable, value, range."""
        try:
            super().__init__(**values)
        except (ValidationError, SettingsError) as exc:
            raise InvalidSettings(rules.explain_settings_error(type(self), exc, values)) from None

    # --- Redis -------------------------------------------------------------------------
    redis_url: rules.RedisUrl = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://, rediss:// (TLS), unix:// or redis+sentinel://host:port/service/db",
    )
    redis_conn_timeout_s: rules.Seconds = Field(5.0, le=300, description="Redis connect timeout")
    redis_conn_retries: int = Field(5, ge=0, le=100, description="Redis connect retries at start")
    redis_outage_limit_s: rules.Seconds = Field(
        300.0, description="a worker keeps polling through a Redis outage this long, then exits"
    )
    key_prefix: rules.KeyPrefix = Field(
        "plantpipe",
        description="prefix of every Redis key and queue name",
    )

    # --- Object storage ------------------------------------------------------------------
    storage: rules.NonEmpty = Field(
        "s3", description="'s3' or a local directory path for the file store"
    )
    s3_endpoint_url: rules.HttpUrl | None = Field(
        None, description="S3-compatible endpoint (LocalStack…)"
    )
    s3_bucket: rules.BucketName = Field("plantpipe", description="bucket for every artifact")
    s3_region: rules.Region = Field("us-east-1", description="S3 region")
    s3_create_bucket: bool = Field(False, description="create the bucket at io start if missing")
    s3_sse: Literal["AES256", "aws:kms"] | None = Field(None, description="server-side encryption")
    s3_sse_kms_key_id: rules.NonEmpty | None = Field(
        None, description="KMS key id when s3_sse is aws:kms"
    )
    s3_multipart_threshold_bytes: rules.Bytes = Field(
        8 * MIB, description="multipart above this size"
    )
    s3_multipart_chunk_bytes: rules.Bytes = Field(
        8 * MIB, ge=5 * MIB, description="multipart part size (S3's smallest part is 5 MiB)"
    )
    s3_connect_timeout_s: rules.Seconds = Field(5.0, le=300, description="S3 connect timeout")
    s3_read_timeout_s: rules.Seconds = Field(30.0, le=3600, description="S3 read timeout")
    s3_expect_continue_bytes: int = Field(
        2 * MIB,
        ge=0,
        le=5 * 1024 * MIB,
        description="a request body from this size on is sent behind 'Expect: 100-continue' "
        "(its headers first, the body once S3 accepts them); a smaller one at once, saving a "
        "round trip (0 = every body waits, as botocore does)",
    )
    s3_sign_payload: bool = Field(
        False,
        description="also sign each request body's SHA-256 (SigV4); off, a body is hashed once: "
        "its SHA-256 goes as x-amz-checksum-sha256, a signed header S3 verifies the body "
        "against (multipart parts: Content-MD5)",
    )
    presign_max_expiry_s: int = Field(
        3600, ge=1, le=7 * DAY, description="upper bound for presigned URL expiry"
    )

    # --- io role -----------------------------------------------------------------------
    io_concurrency: rules.Count = Field(
        50, le=1000, description="S3 requests in flight per io process"
    )
    io_job_timeout_s: rules.WholeSeconds = Field(
        45, description="upload job timeout (re-run after +10 s)"
    )
    io_memory_mb: rules.Count = Field(
        256,
        le=1024 * 1024,
        description="payload bytes one io process holds in memory at once (read from Redis, "
        "not yet sent); uploads wait for room, one larger than this goes alone",
    )
    io_batch_max: rules.Count = Field(
        50,
        le=10_000,
        description="most uploads per io job: uploads produced together (a photo's outputs, "
        "a session's originals, client.upload_many) share one job's bookkeeping",
    )
    io_batch_max_bytes: rules.Bytes = Field(
        16 * MIB,
        description="most payload bytes per io job: a batch of large objects is cut into jobs "
        "of about this size, each handed to io as soon as it is stored, so the io role starts "
        "on the first while the rest are stored",
    )
    retry_delays_s: list[Annotated[float, Field(ge=0, le=3600)]] = Field(
        default_factory=lambda: [2.0, 4.0, 8.0],
        max_length=20,
        description="backoff before retry 1, 2, 3 of a transient failure; its length is the "
        "number of retries",
    )
    breaker_fail_max: rules.Count = Field(
        5, le=1000, description="consecutive S3 failures that open it"
    )
    breaker_reset_s: rules.Seconds = Field(60.0, description="seconds open before a trial call")
    breaker_defer_s: rules.Seconds = Field(5.0, description="re-check delay for deferred uploads")

    # --- blobs and photos ----------------------------------------------------------------
    blob_ttl_s: rules.WholeSeconds = Field(
        7 * DAY, ge=60, description="safety expiry of hand-off blobs"
    )
    max_upload_bytes: rules.Bytes = Field(20 * MIB, description="largest accepted photo")
    max_blob_bytes: rules.Bytes = Field(
        256 * MIB, le=512 * MIB, description="largest blob the store accepts"
    )

    # --- job graph / sessions ---------------------------------------------------------
    session_deadline_s: rules.WholeSeconds = Field(
        1800, description="a session not terminal by then fails"
    )
    session_ttl_s: rules.WholeSeconds = Field(
        7 * DAY, description="how long session records are kept"
    )
    watchdog_interval_s: int = Field(15, ge=1, le=60, description="seconds between watchdog sweeps")
    join_stale_s: rules.WholeSeconds = Field(
        30, description="a complete join without callback is re-driven"
    )
    cpu_job_timeout_s: rules.WholeSeconds = Field(
        60,
        ge=2,
        description="render_photo/aggregate timeout; a render's budget (90 %) counts the "
        "drawing, not the wait for a render slot",
    )
    gpu_job_timeout_s: rules.WholeSeconds = Field(45, ge=2, description="infer_photo job timeout")
    poll_delay_s: rules.Seconds = Field(
        0.05,
        le=60,
        description="arq poll delay: an idle worker polls this often; jobs enqueued with "
        "pipeline.runtime.enqueue.enqueue wake it at once",
    )
    cpu_max_jobs: rules.Auto = Field(
        0,
        description="concurrent render/aggregate jobs per cpu worker (0 = one per CPU core: "
        "renders are CPU-bound, more only queue inside the worker)",
    )
    gpu_max_jobs: rules.Auto = Field(
        0,
        description="concurrent infer jobs per gpu worker (0 = pool processes + 1: the pool "
        "stays busy while a finished photo is handed on, and no job waits long for it)",
    )

    # --- rendering -----------------------------------------------------------------------
    avif_quality: int = Field(85, ge=0, le=100, description="visualization AVIF quality")
    avif_speed: int = Field(
        10, ge=0, le=10, description="visualization AVIF encoder speed (bench/AVIF.md)"
    )
    avif_threads: rules.Auto = Field(
        1, description="AVIF encoder threads per render (0 = one per core)"
    )
    visualization_max_px: int | None = Field(
        2000,
        ge=16,
        le=65_535,
        description="longest side of processed.avif (None = the photo's size); a JPEG is "
        "decoded at a reduced scale for it",
    )

    # --- dashboard (`plantpipe dashboard`, pipeline.dashboard) ----------------------------
    dashboard_host: rules.NonEmpty = Field(
        "127.0.0.1", description="address the dashboard binds (beyond loopback: needs the token)"
    )
    dashboard_port: int = Field(8080, ge=0, le=65535, description="port of the dashboard")
    dashboard_token: str | None = Field(
        None,
        repr=False,
        min_length=16,
        description="token actions (upload, retry, discard) carry in the X-Plantpipe-Token "
        "header; required beyond loopback (None: on loopback the pages carry their own)",
    )

    # --- observability --------------------------------------------------------------------
    log_level: rules.LogLevel = Field("INFO", description="log level (any case)")
    log_json: bool = Field(True, description="JSON log lines (false = console)")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65_535,
        description="Prometheus /metrics and /health port (0 = any free port; None = disabled)",
    )

    @model_validator(mode="after")
    def _agree_and_resolve(self) -> Settings:
        """Settings that must agree; then "0 = auto" resolved once, for every reader."""
        values = dict(self.__dict__)
        problems = rules.cross_check_problems(values)
        if problems:
            raise ValueError("; ".join(problems))
        for name, value in rules.resolve_auto(values, self.model_fields_set).items():
            object.__setattr__(self, name, value)  # the model is frozen after this
        return self

    @property
    def cpu_concurrency(self) -> int:
        """``cpu_max_jobs`` with 0 resolved to the number of CPU cores."""
        return self.cpu_max_jobs or max(1, os.cpu_count() or 1)

    @property
    def uses_s3(self) -> bool:
        return self.storage.strip().lower() == "s3"

    def to_env(self, inherit: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a child process whose ``Settings()`` is this one."""
        return rules.settings_env(self, inherit)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


if __name__ == "__main__":  # README's table: python -m pipeline.settings [--readme README.md]
    rules.readme_main(Settings)
