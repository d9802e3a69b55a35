"""The one upload path: stage outputs as blobs + pending artifacts, then hand them to io.

Every producer of an object to upload (the client, infer_photo's thumbnail, render_photo's
visualization, aggregate's results.json) goes through ``stage`` and ``enqueue``: the bytes
are stored once in Redis under the upload's hold, the artifact is registered ``pending``,
and the upload job is queued on the io role under a deterministic id (idempotent per
artifact).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from arq.connections import ArqRedis

from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.graph import UPLOAD, UPLOAD_BATCH
from pipeline.schemas import ArtifactRecord, UploadBatch, UploadJob
from pipeline.settings import Settings
from pipeline.state.artifacts import ArtifactStore
from pipeline.state.blobs import BlobStore


def upload_job_id(artifact_id: str, deferrals: int = 0) -> str:
    """Deterministic arq job id of an artifact's upload (a deferral gets its own)."""
    return f"upload:{artifact_id}" if deferrals == 0 else f"upload:{artifact_id}:defer:{deferrals}"


def upload_holder(artifact_id: str) -> str:
    """Name under which an upload holds its blob."""
    return f"upload:{artifact_id}"


@dataclass(frozen=True)
class Output:
    """One object to upload: its artifact id, destination key, content type and bytes."""

    artifact_id: str
    key: str
    content_type: str
    body: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    holders: tuple[str, ...] = ()  # holds on the blob besides the upload's own


async def stage(
    blobs: BlobStore,
    artifacts: ArtifactStore,
    outputs: Sequence[Output],
    session_id: str | None = None,
    *,
    final: bool = False,
) -> list[UploadJob]:
    """Store each output's bytes as a blob and register its artifact (pending); ``final``
    marks the session's last artifact. Returns the upload jobs to ``enqueue``. The blobs
    go in one round trip (one more per blob of a MiB or more), the artifacts in one."""
    refs = await blobs.put_many(
        [(out.body, [upload_holder(out.artifact_id), *out.holders]) for out in outputs]
    )
    records = [
        ArtifactRecord(
            artifact_id=out.artifact_id,
            key=out.key,
            content_type=out.content_type,
            size=len(out.body),
            session_id=session_id,
            sha256=ref.sha256,
            metadata=out.metadata,
        )
        for out, ref in zip(outputs, refs, strict=True)
    ]
    await artifacts.register(records, session_id=session_id, final=final)
    return [
        UploadJob(
            artifact_id=out.artifact_id,
            key=out.key,
            blob=blob,
            content_type=out.content_type,
            session_id=session_id,
            metadata=out.metadata,
        )
        for out, blob in zip(outputs, refs, strict=True)
    ]


T = TypeVar("T")


def io_batches(items: Sequence[T], size: Callable[[T], int], settings: Settings) -> list[list[T]]:
    """``items`` in order, cut into io jobs of at most ``io_batch_max`` items and, past the
    first item of each, ``io_batch_max_bytes`` bytes (a larger item goes alone)."""
    batches: list[list[T]] = []
    current: list[T] = []
    held = 0
    for item in items:
        if current and (
            len(current) >= settings.io_batch_max or held + size(item) > settings.io_batch_max_bytes
        ):
            batches.append(current)
            current, held = [], 0
        current.append(item)
        held += size(item)
    if current:
        batches.append(current)
    return batches


async def store_and_queue(
    blobs: BlobStore,
    artifacts: ArtifactStore,
    redis: ArqRedis,
    settings: Settings,
    outputs: Sequence[Output],
    session_id: str | None = None,
) -> list[UploadJob]:
    """Both halves of the upload path, one io job's worth at a time: each batch is staged
    and queued before the next is stored, so the io role starts on the first batch of a large
    hand-over while the rest are still stored. Returns the queued upload jobs."""
    jobs: list[UploadJob] = []
    for batch in io_batches(outputs, lambda out: len(out.body), settings):
        staged = await stage(blobs, artifacts, batch, session_id)
        await enqueue_uploads(redis, settings, staged)
        jobs.extend(staged)
    return jobs


def batch_job_id(batch: UploadBatch) -> str:
    """Deterministic arq job id of a batch: the same uploads on the same try get the same id
    (a re-run producer enqueues nothing twice); a retry or deferral gets its own."""
    digest = hashlib.sha256("\n".join(u.artifact_id for u in batch.uploads).encode())
    suffix = "" if (batch.attempt, batch.deferrals) == (1, 0) else f":{batch.attempt}"
    suffix += f":defer:{batch.deferrals}" if batch.deferrals else ""
    return f"upload_batch:{digest.hexdigest()[:24]}{suffix}"


async def enqueue_batch(
    redis: ArqRedis, queue: str, batch: UploadBatch, *, defer_s: float | None = None
) -> None:
    """Queue one ``upload_batch`` job on the io queue ``queue`` (``defer_s``: not before then)."""
    await UPLOAD_BATCH.enqueue_on(redis, queue, batch, job_id=batch_job_id(batch), defer_s=defer_s)


def upload_job_ids(settings: Settings, jobs: Sequence[UploadJob]) -> list[str]:
    """The arq job ids :func:`enqueue_uploads` gives ``jobs``."""
    return [
        upload_job_id(chunk[0].artifact_id, chunk[0].deferrals)
        if len(chunk) == 1
        else batch_job_id(UploadBatch(uploads=chunk))
        for chunk in io_batches(jobs, lambda job: job.blob.size, settings)
    ]


async def enqueue_uploads(redis: ArqRedis, settings: Settings, jobs: Sequence[UploadJob]) -> None:
    """Hand uploads to the io role: one ``upload`` job for a lone upload, ``upload_batch``
    jobs (``io_batches``) for uploads produced together (idempotent either way)."""
    queue = QueueNames.from_settings(settings).io
    chunks = io_batches(jobs, lambda job: job.blob.size, settings)
    await asyncio.gather(
        *(
            UPLOAD.enqueue_on(
                redis,
                queue,
                chunk[0],
                job_id=upload_job_id(chunk[0].artifact_id, chunk[0].deferrals),
            )
            if len(chunk) == 1
            else enqueue_batch(redis, queue, UploadBatch(uploads=chunk))
            for chunk in chunks
        )
    )
