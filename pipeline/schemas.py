"""Pydantic models that cross a process or network boundary (jobs, records, results)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.vision.types import PhotoAnalysis

ArtifactState = Literal["pending", "uploaded", "failed"]
SessionStatus = Literal["pending", "processing", "completed", "warning", "failed"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "warning", "failed"})
PhotoState = Literal["pending", "processing", "done", "failed"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlobRef(BaseModel):
    """A reference to bytes held in Redis."""

    model_config = ConfigDict(frozen=True)

    sha256: str
    size: int


class UploadJob(_Model):
    """Payload of the io ``upload`` job: which blob goes to which key."""

    artifact_id: str
    key: str
    blob: BlobRef
    content_type: str
    metadata: dict[str, str] = Field(default_factory=dict)
    session_id: str | None = None
    deferrals: int = 0


class UploadItem(_Model):
    """One object for ``PipelineClient.upload_many``: its key, bytes, type and metadata."""

    key: str
    data: bytes
    content_type: str
    metadata: dict[str, str] = Field(default_factory=dict)


class UploadBatch(_Model):
    """Payload of the io ``upload_batch`` job: uploads produced together (a photo's outputs,
    a session's originals, ``PipelineClient.upload_many``). Each keeps its own artifact state,
    retries and dead letter; ``attempt`` is the try these uploads are on (a retry is a new
    batch of what failed), ``deferrals`` how often the circuit breaker put them off."""

    uploads: list[UploadJob] = Field(min_length=1)
    attempt: int = Field(1, ge=1)
    deferrals: int = Field(0, ge=0)

    @property
    def session_id(self) -> str | None:
        """The session of every upload in the batch, or None when they differ (or have none)."""
        sessions = {u.session_id for u in self.uploads}
        return sessions.pop() if len(sessions) == 1 else None


class InferJob(_Model):
    """Payload of the gpu ``infer_photo`` job (one child of a session's fan-out)."""

    session_id: str
    index: int
    photo_count: int
    blob: BlobRef
    mime: str


class RenderJob(_Model):
    """Payload of the cpu ``render_photo`` job: draw one analysed photo's outputs."""

    session_id: str
    index: int
    photo_count: int
    blob: BlobRef
    analysis: PhotoAnalysis
    vegetation: BlobRef | None = Field(
        None, description="1-bit PNG of the counted vegetation (None: nothing to overlay)"
    )


class AggregateJob(_Model):
    session_id: str


class ArtifactRecord(_Model):
    artifact_id: str
    key: str
    content_type: str
    size: int
    session_id: str | None = None
    state: ArtifactState = "pending"
    error_code: str | None = None
    reason: str | None = None
    etag: str | None = None
    sha256: str | None = Field(None, description="the bytes' blob (what a pending upload needs)")
    metadata: dict[str, str] = Field(default_factory=dict, description="the object's metadata")
    updated_at: datetime = Field(default_factory=utcnow)


class DeadLetter(_Model):
    """A job that gave up, with everything needed to replay it."""

    id: str
    function: str
    queue: str
    job_id: str
    kwargs: dict[str, Any]
    error_code: str
    reason: str
    attempts: int
    session_id: str | None = None
    replayable: bool = True
    failed_at: datetime = Field(default_factory=utcnow)


class PhotoProgress(_Model):
    index: int
    state: PhotoState = "pending"
    error_code: str | None = None
    reason: str | None = None
    detected: int | None = None
    estimated: int | None = None


class ArtifactStatus(_Model):
    artifact_id: str
    key: str
    state: ArtifactState


class SessionRecord(_Model):
    """What ``client.status()`` returns."""

    session_id: str
    status: SessionStatus
    stage: str
    reason: str | None = None
    photo_count: int
    photos: list[PhotoProgress]
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime
    artifacts: list[ArtifactStatus] = Field(default_factory=list)
    artifacts_uploaded: int = 0
    artifacts_failed: int = 0
    artifacts_ready: bool = False
    artifacts_final: bool = Field(False, description="every artifact is registered")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def artifacts_settled(self) -> bool:
        """Every artifact is registered and none is still pending (uploaded or failed)."""
        return self.artifacts_final and all(a.state != "pending" for a in self.artifacts)


class SessionSummary(_Model):
    """One session as a list shows it (``pipeline.state.listing``; the dashboard's rows):
    its record's headline fields and its photos' progress and counts summed."""

    session_id: str
    status: SessionStatus
    stage: str = ""
    reason: str | None = None
    photo_count: int
    photos_done: int = 0
    photos_failed: int = 0
    detected: int = 0
    estimated: int = 0
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    artifacts_total: int = 0
    artifacts_uploaded: int = 0
    artifacts_failed: int = 0
    artifacts_ready: bool = False
    thumbnail: str | None = Field(
        None, description="the first photo's uploaded thumbnail (artifact name), if any"
    )


class SessionEvent(_Model):
    id: str
    type: str
    session_id: str
    data: dict[str, Any] = Field(default_factory=dict)


# --- the result document (results.json) -----------------------------------------------


class PhotoResult(_Model):
    index: int
    status: Literal["done", "failed"]
    error_code: str | None = None
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    analysis: PhotoAnalysis | None = None
    detected: int = 0
    estimated: int = 0
    avg_confidence: float | None = None
    provider: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(
        default_factory=list,
        description="a done photo's caveats: analysis warnings, artifacts that failed",
    )
    keys: dict[str, str] = Field(default_factory=dict, description="artifact name -> S3 key")


class SessionResult(_Model):
    session_id: str
    status: SessionStatus
    reason: str | None = None
    photos: list[PhotoResult]
    total_detected: int
    total_estimated: int
    avg_confidence: float | None
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    completed_at: datetime
    keys: dict[str, str] = Field(default_factory=dict)
    timings_ms: dict[str, float] = Field(
        default_factory=dict,
        description="the session's own steps in ms: aggregate (reading the photos' reports "
        "and building this document); each photo's stages are in its timings_ms",
    )


ResultT = TypeVar("ResultT")


class ChildReport(_Model, Generic[ResultT]):
    """What a fan-out child records in its join (exactly once). ``ChildReport[Model]`` carries
    a typed ``result`` (``JoinStore.results(join, Model)`` reads it back as such); plain
    ``ChildReport`` takes any JSON value."""

    ok: bool
    error_code: str | None = None
    reason: str | None = None
    result: ResultT | None = None

    @model_validator(mode="before")
    @classmethod
    def _failure_has_no_result(cls, data: Any) -> Any:
        """A failed child's report carries no result: the empty one earlier versions stored
        (``{}``) reads as none, whatever the result's model."""
        if isinstance(data, dict) and data.get("ok") is False and data.get("result") == {}:
            return {**data, "result": None}
        return data


class PhotoReport(_Model):
    """A photo's result in its session's join (``render_photo`` → ``aggregate``)."""

    analysis: PhotoAnalysis
    warnings: list[str] = Field(
        default_factory=list,
        description="what went wrong with the photo's outputs (empty: all were made)",
    )
    render_ms: float | None = Field(
        None, description="drawing the outputs, in ms (None: not drawn)"
    )


# --- what each job returns (arq keeps it as the job's result) ---------------------------


class JobOutcome(_Model):
    """What a job returns: done (``ok``), done before (``skipped``), or given up (with the
    code and reason of its dead letter). Each job's outcome adds its own figures."""

    ok: bool = True
    skipped: bool = False
    error_code: str | None = None
    reason: str | None = None


class InferOutcome(JobOutcome):
    detected: int | None = Field(None, description="plants detected in the photo")


class RenderOutcome(JobOutcome):
    bytes: dict[str, int] = Field(default_factory=dict, description="output name → size")
    render_ms: float | None = None


class AggregateOutcome(JobOutcome):
    status: SessionStatus | None = None
    elapsed_ms: float | None = None
    rerun: bool = False


class UploadOutcome(JobOutcome):
    """How the uploads of an ``upload``/``upload_batch`` job ended this time."""

    done: int = 0
    skipped_uploads: int = Field(0, description="uploaded before (not sent again)")
    retry: int = 0
    deferred: int = 0
    failed: int = 0
