"""Every tunable of plantpipe, read from the environment (prefix ``PLANTPIPE_``).

This is the only place configuration is read. Each field has a ``PLANTPIPE_<NAME>`` variable;
lists are given as JSON (``PLANTPIPE_RETRY_DELAYS_S='[2, 4, 8]'``). A process that starts
others (``plantpipe run``, ``plantpipe workers``) hands them its configuration with
:meth:`Settings.to_env`, never by copying variables itself.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """plantpipe configuration. Defaults are those of the original pipeline."""

    model_config = SettingsConfigDict(env_prefix="PLANTPIPE_", extra="ignore", frozen=True)

    # --- Redis -------------------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://, rediss:// (TLS), unix:// or redis+sentinel://host:port/service/db",
    )
    redis_conn_timeout_s: float = Field(5.0, description="Redis connect timeout")
    redis_conn_retries: int = Field(5, description="Redis connect attempts at worker start")
    redis_outage_limit_s: float = Field(
        300.0,
        gt=0,
        description="a worker keeps polling through a Redis outage this long, then exits",
    )
    key_prefix: str = Field("plantpipe", description="prefix of every Redis key and queue name")

    # --- Object storage ------------------------------------------------------------------
    storage: str = Field("s3", description="'s3' or a local directory path for the file store")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (LocalStack…)")
    s3_bucket: str = Field("plantpipe", min_length=3, description="bucket for every artifact")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_create_bucket: bool = Field(False, description="create the bucket at io start if missing")
    s3_sse: Literal["AES256", "aws:kms"] | None = Field(None, description="server-side encryption")
    s3_sse_kms_key_id: str | None = Field(None, description="KMS key id when s3_sse is aws:kms")
    s3_multipart_threshold_bytes: int = Field(8 * MIB, description="multipart above this size")
    s3_multipart_chunk_bytes: int = Field(8 * MIB, description="multipart part size")
    s3_connect_timeout_s: float = Field(5.0, description="S3 connect timeout")
    s3_read_timeout_s: float = Field(30.0, description="S3 read timeout")
    s3_expect_continue_bytes: int = Field(
        2 * MIB,
        ge=0,
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
    presign_max_expiry_s: int = Field(3600, description="upper bound for presigned URL expiry")

    # --- io role -----------------------------------------------------------------------
    io_concurrency: int = Field(50, ge=1, description="S3 requests in flight per io process")
    io_job_timeout_s: int = Field(45, description="upload job timeout (re-run after +10 s)")
    io_memory_mb: int = Field(
        256,
        ge=1,
        description="payload bytes one io process holds in memory at once (read from Redis, "
        "not yet sent); uploads wait for room, one larger than this goes alone",
    )
    io_batch_max: int = Field(
        50,
        ge=1,
        description="most uploads per io job: uploads produced together (a photo's outputs, "
        "a session's originals, client.upload_many) share one job's bookkeeping",
    )
    io_batch_max_bytes: int = Field(
        16 * MIB,
        ge=1,
        description="most payload bytes per io job: a batch of large objects is cut into jobs "
        "of about this size, each handed to io as soon as it is stored, so the io role starts "
        "on the first while the rest are stored",
    )
    retry_delays_s: list[float] = Field(
        default_factory=lambda: [2.0, 4.0, 8.0],
        description="backoff before retry 1, 2, 3 of a transient failure",
    )
    breaker_fail_max: int = Field(5, ge=1, description="consecutive S3 failures that open it")
    breaker_reset_s: float = Field(60.0, gt=0, description="seconds open before a trial call")
    breaker_defer_s: float = Field(5.0, gt=0, description="re-check delay for deferred uploads")

    # --- blobs -------------------------------------------------------------------------
    blob_ttl_s: int = Field(7 * 24 * 3600, description="safety expiry of hand-off blobs")
    max_upload_bytes: int = Field(20 * MIB, description="largest accepted photo")
    max_blob_bytes: int = Field(256 * MIB, description="largest blob the store accepts")

    # --- job graph / sessions ---------------------------------------------------------
    session_deadline_s: int = Field(1800, description="a session not terminal by then fails")
    session_ttl_s: int = Field(7 * 24 * 3600, description="how long session records are kept")
    watchdog_interval_s: int = Field(15, description="seconds between watchdog sweeps")
    join_stale_s: int = Field(30, description="a complete join without callback is re-driven")
    cpu_job_timeout_s: int = Field(
        60,
        ge=2,
        description="render_photo/aggregate timeout; a render's budget (90 %) counts the "
        "drawing, not the wait for a render slot",
    )
    gpu_job_timeout_s: int = Field(45, description="infer_photo job timeout")
    max_tries: int = Field(4, description="attempts per job (1 + len(retry_delays_s))")
    poll_delay_s: float = Field(
        0.05,
        description="arq poll delay: an idle worker polls this often; jobs enqueued with "
        "pipeline.runtime.enqueue.enqueue wake it at once",
    )
    cpu_max_jobs: int = Field(
        0,
        ge=0,
        description="concurrent render/aggregate jobs per cpu worker (0 = one per CPU core: "
        "renders are CPU-bound, more only queue inside the worker)",
    )
    gpu_max_jobs: int = Field(
        0,
        ge=0,
        description="concurrent infer jobs per gpu worker (0 = pool processes + 1: the pool "
        "stays busy while a finished photo is handed on, and no job waits long for it)",
    )

    # --- inference -----------------------------------------------------------------------
    pool_processes: int = Field(
        0,
        ge=0,
        description="ONNX Runtime processes per gpu worker (0 = one per CUDA device id with "
        "onnxruntime-gpu installed, else one single-threaded process per CPU core)",
    )
    device_ids: list[int] = Field(default_factory=lambda: [0], description="CUDA ids, round robin")
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        description="ONNX Runtime providers in preference order",
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime intra-op threads per process (0 = ONNX Runtime's default, "
        "or cores ÷ processes when several CPU processes share the cores)",
    )
    seg_model_path: Path | None = Field(None, description="segmentation ONNX (None = bundled)")
    seg_class_names: list[str] | None = Field(None, description="class names of seg model")
    seg_input_size: int = Field(1024, description="segmentation input side")
    seg_conf: float = Field(0.30, description="segmentation confidence threshold")
    seg_iou: float = Field(0.50, description="segmentation NMS IoU")
    det_model_path: Path | None = Field(None, description="detection ONNX (None = bundled)")
    det_class_names: list[str] | None = Field(None, description="class names of det model")
    det_input_size: int = Field(512, description="detection input side (= slice size)")
    det_conf: float = Field(0.25, description="detection confidence threshold")
    det_iou: float = Field(
        0.35,
        description="detection NMS IoU inside one slice (0.35: fewer shifted double boxes than "
        "0.5, bench/ACCURACY.md)",
    )
    det_max_per_slice: int = Field(
        300,
        ge=1,
        description="most detections kept per slice after NMS (best score first)",
    )
    slice_size: int = Field(512, description="slice width and height")
    slice_overlap: float = Field(0.25, ge=0, lt=1, description="slice overlap ratio both ways")
    merge_ios: float = Field(
        0.85,
        description="GREEDYNMM intersection-over-smaller threshold (0.85: 0.5 merged neighbouring "
        "plants of dense beds, bench/ACCURACY.md)",
    )
    merge_within_slice: bool = Field(
        True,
        description="GREEDYNMM also merges boxes of one slice (false: only copies from "
        "overlapping slices)",
    )
    merge_large_px: float | None = Field(
        64.0,
        description="two boxes both at least this long merge at merge_ios_large (a large "
        "plant comes out as several leaf-cluster boxes); None = merge_ios for all",
    )
    merge_ios_large: float = Field(0.5, description="GREEDYNMM IoS threshold of large boxes")
    det_batch_size: int = Field(16, ge=1, description="slices per device batch")
    slice_edge_margin_px: float | None = Field(
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
    rescale_min_px: float = Field(
        26.0, description="median plant side (detector input px) below which slices shrink"
    )
    rescale_max_px: float = Field(
        80.0, description="median plant side (detector input px) above which slices grow"
    )
    rescale_small_target_px: float = Field(
        30.0, description="median plant side that shrunk slices aim at (input px)"
    )
    rescale_large_target_px: float = Field(
        60.0, description="median plant side that grown slices aim at (input px)"
    )
    rescale_min_detections: int = Field(
        8, ge=1, description="detections needed to measure a region's plant size"
    )
    rescale_small_gain: float = Field(
        1.1,
        ge=1.0,
        description="a region detected again in smaller slices keeps that pass only when it "
        "finds at least this many times the plants of the first",
    )
    segment_merge_overlap: float | None = Field(
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
    bands: int = Field(4, ge=1, description="horizontal bands per segment")
    default_plant_area_px: float = Field(2500.0, description="plant area without calibration")
    min_calibration_detections: int = Field(10, description="detections needed to calibrate")
    plant_area_factor: float = Field(0.9, description="estimate = area / (plant area × factor)")
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

    # --- rendering -----------------------------------------------------------------------
    thumbnail_px: int = Field(300, description="thumbnail longest side")
    thumbnail_quality: int = Field(85, description="thumbnail JPEG quality")
    avif_quality: int = Field(85, ge=0, le=100, description="visualization AVIF quality")
    avif_speed: int = Field(
        10, ge=0, le=10, description="visualization AVIF encoder speed (bench/AVIF.md)"
    )
    avif_threads: int = Field(
        1, ge=0, description="AVIF encoder threads per render (0 = one per core)"
    )
    visualization_max_px: int | None = Field(
        2000,
        ge=16,
        description="longest side of processed.avif (None = the photo's size); a JPEG is "
        "decoded at a reduced scale for it",
    )

    # --- dashboard (`plantpipe dashboard`, pipeline.dashboard) ------------------------------
    dashboard_host: str = Field(
        "127.0.0.1",
        description="address `plantpipe dashboard` binds (anything but loopback "
        "needs PLANTPIPE_DASHBOARD_TOKEN)",
    )
    dashboard_port: int = Field(8080, ge=0, le=65535, description="port of the dashboard")
    dashboard_token: str | None = Field(
        None,
        repr=False,
        min_length=16,
        description="token that actions (upload, retry, discard) must carry in the "
        "X-Plantpipe-Token header; required to bind beyond loopback (None: on loopback "
        "the pages carry a token of their own)",
    )

    # --- observability --------------------------------------------------------------------
    log_level: str = Field("INFO", description="log level")
    log_json: bool = Field(True, description="JSON log lines (false = console)")
    metrics_port: int | None = Field(None, description="Prometheus port (None = disabled)")

    @field_validator("retry_delays_s")
    @classmethod
    def _positive_delays(cls, v: list[float]) -> list[float]:
        if any(d < 0 for d in v):
            raise ValueError("retry delays must be >= 0")
        return v

    @model_validator(mode="after")
    def _resolve_inference_processes(self) -> Settings:
        """0 = auto for ``pool_processes``, ``intra_op_threads`` and ``gpu_max_jobs``:
        resolved here, once, so every reader sees the numbers that run."""
        cores = max(1, os.cpu_count() or 1)
        on_gpu = "CUDAExecutionProvider" in self.providers and _installed("onnxruntime-gpu")
        resolve = functools.partial(object.__setattr__, self)  # the model is frozen after this
        if self.pool_processes == 0:
            # CPU inference: separate single-threaded processes use the cores better than one
            # process whose threads synchronise per operator (bench/RESULTS.md §6).
            resolve("pool_processes", max(1, len(self.device_ids)) if on_gpu else cores)
        if self.intra_op_threads == 0 and not on_gpu and self.pool_processes > 1:
            resolve("intra_op_threads", max(1, cores // self.pool_processes))
        if self.gpu_max_jobs == 0:
            resolve("gpu_max_jobs", self.pool_processes + 1)
        return self

    @model_validator(mode="after")
    def _records_outlive_deadline(self) -> Settings:
        if self.session_ttl_s <= self.session_deadline_s:
            raise ValueError(
                f"PLANTPIPE_SESSION_TTL_S ({self.session_ttl_s}) must be longer than "
                f"PLANTPIPE_SESSION_DEADLINE_S ({self.session_deadline_s}): a session's records "
                "would expire before the watchdog could end it"
            )
        return self

    @property
    def cpu_concurrency(self) -> int:
        """``cpu_max_jobs`` with 0 resolved to the number of CPU cores."""
        return self.cpu_max_jobs or max(1, os.cpu_count() or 1)

    @property
    def uses_s3(self) -> bool:
        return self.storage.strip().lower() == "s3"

    def to_env(self, inherit: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a child process whose ``Settings()`` is this configuration.

        ``inherit`` (e.g. ``os.environ``) passes through, less every variable a field reads
        (any case); then each field this object was given — by the environment or as an
        argument, ``model_fields_set`` — is written as ``PLANTPIPE_<NAME>`` the way the
        environment gives it (JSON for lists and numbers, ``true``/``false``). Fields not
        given stay out, so the child resolves "0 = auto" itself, as here. A ``None`` that
        the environment cannot express (the field's default is not ``None``) raises
        ``ValueError``."""
        prefix = str(self.model_config.get("env_prefix", ""))
        names = {name: f"{prefix}{name}".upper() for name in type(self).model_fields}
        taken = set(names.values())
        env = {k: v for k, v in (inherit or {}).items() if k.upper() not in taken}
        for name, value in self.model_dump(mode="json", include=self.model_fields_set).items():
            if value is None:
                if type(self).model_fields[name].default is not None:
                    raise ValueError(f"{names[name]}: None cannot be passed in the environment")
                continue
            env[names[name]] = value if isinstance(value, str) else json.dumps(value)
        return env


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def settings_markdown_table() -> str:
    """The configuration table of README.md, generated from this class."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        shown = "—" if default is None else f"`{default}`"
        rows.append(f"| `PLANTPIPE_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)
