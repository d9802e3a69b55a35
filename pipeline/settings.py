"""Every tunable of plantpipe, read from the environment (prefix ``PLANTPIPE_``; lists as
JSON), each with a range or a set of values; the rules, the one-line errors and README's table
are in ``pipeline.settings_rules``. Child processes get theirs from :meth:`Settings.to_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from pipeline import settings_rules as rules
from pipeline.errors import InvalidSettings
from pipeline.settings_inference import InferenceSettings
from pipeline.settings_rules import DAY, MIB


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
    redis_ride_out_s: rules.Seconds = Field(
        30.0,
        le=600,
        description="a Redis command (client, CLI or worker) retries this long while Redis "
        "restarts or Sentinel fails over, then fails",
    )
    redis_replica_acks: int | None = Field(
        None,
        ge=0,
        le=16,
        description="replicas that must hold a new session (photos, records, jobs) before "
        "submit returns, and a job's writes before it counts as done, so a failover cannot "
        "lose them (None = 1 under a redis+sentinel:// URL, else 0 = no wait)",
    )
    redis_replica_wait_s: rules.Seconds = Field(
        2.0,
        le=60,
        description="how long submit or a job waits for those replicas; past it the writes "
        "are kept on the master alone (logged: a failover now could lose them)",
    )
    redis_submit_max_used: float = Field(
        0.8,
        gt=0,
        le=1,
        description="a new session is accepted only while Redis' used memory plus its photos "
        "stays under this share of maxmemory (backpressure: the rest is the workers' room to "
        "finish what is in flight); no maxmemory set = no check",
    )
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
