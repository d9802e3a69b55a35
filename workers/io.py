"""io role: every S3 (or local store) write, on asyncio, at most ``io_concurrency`` at once.

Run with ``arq workers.io.WorkerSettings``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import PermanentError
from pipeline.logs import get_logger
from pipeline.runtime import metrics
from pipeline.runtime.budget import ByteBudget
from pipeline.runtime.context import ROLE_CONTEXT
from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.graph import UPLOAD, UPLOAD_BATCH
from pipeline.runtime.job import (
    JobRun,
    retry_or_give_up,
    role_job,
    time_budget,
)
from pipeline.runtime.retry import Classified, classify, describe, retry_delay
from pipeline.runtime.roles import (
    import_settings,
    role_shutdown,
    role_started,
    role_startup,
    role_worker_options,
    worker_settings_class,
)
from pipeline.runtime.uploads import enqueue_batch, upload_holder, upload_job_id
from pipeline.schemas import UploadBatch, UploadJob, UploadOutcome
from pipeline.settings import Settings
from pipeline.state.lua import run_lua_batch
from pipeline.storage import ObjectStore, PutResult, make_store
from pipeline.storage.breaker import RedisCircuitBreaker
from workers.io_context import IoContext
from workers.io_payloads import BlobState, let_go, put_blob, read_states

log = get_logger("workers.io")


async def startup(ctx: dict[str, Any]) -> None:
    settings, redis = await role_startup(ctx, "io")
    store: ObjectStore = ctx.get("store") or make_store(settings)
    await store.start()  # bucket reachable (created when PLANTPIPE_S3_CREATE_BUCKET=1)
    breaker = RedisCircuitBreaker(redis, settings)
    memory = ByteBudget(settings.io_memory_mb * 1024 * 1024)
    context = IoContext.build("io", redis, settings, store=store, breaker=breaker, memory=memory)
    await role_started(ctx, context)
    log.info(
        "io.started",
        store=store.description,
        concurrency=settings.io_concurrency,
        memory_mb=settings.io_memory_mb,
        retry_delays_s=settings.retry_delays_s,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    store: ObjectStore | None = ctx.get("store")
    context = ctx.get(ROLE_CONTEXT)
    if isinstance(context, IoContext):
        store = context.store
    if store is not None:
        await store.close()
    await role_shutdown(ctx)
    log.info("io.stopped")


def deferral_s(ctx: IoContext, wait_s: float) -> float:
    """How long to put off uploads the breaker refused: until it may allow the call, but at
    least every breaker_defer_s (a half-open trial usually settles in milliseconds)."""
    return max(0.2, min(wait_s, ctx.settings.breaker_defer_s))


async def already_uploaded(ctx: IoContext, job: UploadJob) -> None:
    """A re-run found the artifact uploaded: only the upload's hold on the bytes is left."""
    await ctx.blobs.release(job.blob, upload_holder(job.artifact_id))
    log.info("upload.already_done", key=job.key)


async def record(ctx: IoContext, done: Sequence[tuple[UploadJob, PutResult]]) -> list[UploadJob]:
    """Every finished upload's artifact is uploaded (one round trip), then each upload lets
    go of its bytes (one more). Returns the uploads whose artifact record does not exist:
    its registration was lost (a Sentinel failover dropped it; the producer's re-run
    registers it again) — those keep their bytes and are tried again (:func:`upload_all`)."""
    if not done:
        return []
    if await ctx.breaker.record_success() != "closed":
        log.info("breaker.closed", store=ctx.store.description)
    calls = [
        ctx.artifacts.transition_call(
            job.artifact_id, "uploaded", session_id=job.session_id, etag=result.etag
        )
        for job, result in done
    ]
    replies = await run_lua_batch(ctx.redis, calls)
    unknown: list[UploadJob] = []
    kept: list[UploadJob] = []
    for (job, result), (moved, ready) in zip(done, replies, strict=True):
        if moved == -1:
            log.warning("upload.artifact_unknown", key=job.key, action="tried again later")
            unknown.append(job)
            continue
        kept.append(job)
        metrics.UPLOAD_BYTES.inc(result.size)
        log.info(
            "upload.done",
            key=job.key,
            bytes=result.size,
            multipart=result.multipart,
            artifacts_ready=ready,
        )
    if kept:
        releases = [
            ctx.blobs.release_call(job.blob, upload_holder(job.artifact_id)) for job in kept
        ]
        await run_lua_batch(ctx.redis, releases)
    return unknown


async def breaker_saw(ctx: IoContext, exc: BaseException) -> bool:
    """A transient S3 failure counts against the shared circuit breaker. Returns True when the
    breaker is open after it (this failure opened it, or it was a failed half-open trial, or
    the request was under way when another opened it): S3 is out, and the failure says
    nothing about this upload, which is then deferred like one the breaker refused, using up
    none of its tries. (Otherwise the upload that is first in line at every half-open trial
    would run out of tries during a long outage and be dead-lettered.)"""
    if not classify(exc).transient:
        return False
    if await ctx.breaker.record_failure() != "open":
        return False
    log.warning("breaker.open", store=ctx.store.description, error=type(exc).__name__)
    return True


def outage_wait_s(ctx: IoContext) -> float:
    """How long an upload that failed with the breaker open waits before asking again."""
    return ctx.settings.breaker_reset_s


async def mark_failed(ctx: IoContext, job: UploadJob, code: str, reason: str) -> None:
    await ctx.artifacts.transition(
        job.artifact_id, "failed", session_id=job.session_id, error_code=code, reason=reason
    )


@dataclass(frozen=True)
class Settled:
    """How one upload of a batch ended this time: done (with its result), skipped (done
    before), retry or deferred (after ``wait_s``, in a follow-up batch), or failed (its dead
    letter written, its artifact failed)."""

    kind: Literal["done", "skipped", "retry", "deferred", "failed"]
    result: PutResult | None = None
    wait_s: float = 0.0


async def settle(
    ctx: IoContext,
    job: UploadJob,
    state: BlobState,
    attempt: int,
    crash: PermanentError | None,
) -> Settled:
    """One upload of a batch, on its own: nothing it does touches its siblings."""
    try:
        if state.uploaded:
            await already_uploaded(ctx, job)
            return Settled("skipped")
        if crash is not None:
            # A crash loop: an earlier run may have stored the object before its worker died
            # (or before Redis lost the record).
            stored = await stored_copy(ctx, job)
            return Settled("done", stored) if stored else await failed(ctx, job, crash, attempt)
        permit = await ctx.breaker.allow()
        if not permit.allowed:
            return Settled("deferred", wait_s=permit.wait_s)
        try:
            budget_s = time_budget(ctx.settings.io_job_timeout_s)
            return Settled("done", await put_blob(ctx, job, state, budget_s))
        except Exception as exc:
            return await failed(ctx, job, exc, attempt)
    finally:
        let_go(ctx, state)


async def stored_copy(ctx: IoContext, job: UploadJob) -> PutResult | None:
    """The upload's object when the store already holds exactly its bytes (same size and
    SHA-256): an earlier try stored it, but the record of it was lost (the worker died, or
    Redis restarted, between the PUT and the record, or the PUT's answer never came back).
    Asked before an upload gives up, so such an artifact is recorded uploaded, not failed.
    None when the object is absent, different, or the store cannot be asked now."""
    try:
        info = await ctx.store.head(job.key)
    except Exception as exc:
        log.warning("upload.head_failed", key=job.key, error=describe(exc))
        return None
    if info is None or (info.size, info.sha256) != (job.blob.size, job.blob.sha256):
        return None
    log.info("upload.found_stored", key=job.key, bytes=info.size)
    return PutResult(key=job.key, size=info.size, etag=info.etag, sha256=job.blob.sha256)


def gives_up(ctx: IoContext, exc: Exception, attempt: int) -> bool:
    """Whether the retry policy ends an upload that failed with ``exc`` on try ``attempt``."""
    return not classify(exc).transient or retry_delay(ctx.settings, attempt) is None


async def upload_verdict(
    ctx: IoContext, job: UploadJob, exc: Exception, attempt: int
) -> tuple[Classified, float | None]:
    """The retry policy for one upload of a batch (``retry_or_give_up``, its dead letter
    replayable as a lone ``upload``)."""
    return await retry_or_give_up(
        ctx,
        exc,
        function="upload",
        job_id=upload_job_id(job.artifact_id),
        payload=job.model_dump(mode="json"),
        attempt=attempt,
        session_id=job.session_id,
        key=job.key,
    )


async def failed(ctx: IoContext, job: UploadJob, exc: Exception, attempt: int) -> Settled:
    """Where one upload's failure leads: deferred (S3 is out), a retry, done after all (the
    object was stored by a try whose record was lost), or given up."""
    if await breaker_saw(ctx, exc):
        return Settled("deferred", wait_s=outage_wait_s(ctx))
    if gives_up(ctx, exc, attempt):
        stored = await stored_copy(ctx, job)
        if stored is not None:
            return Settled("done", stored)
    verdict, delay = await upload_verdict(ctx, job, exc, attempt)
    if delay is not None:
        return Settled("retry", wait_s=delay)
    await mark_failed(ctx, job, verdict.code, verdict.reason)
    return Settled("failed")


async def unrecorded(ctx: IoContext, job: UploadJob, attempt: int) -> Settled:
    """An upload stored in S3 whose artifact record is missing: tried again after the retry
    delay (by then the producer's re-run registered it); out of tries, dead-lettered."""
    exc = PermanentError(
        f"no artifact record for {job.key!r} (lost in a Redis failover, or expired)",
        code="artifact_unknown",
    )
    delay = retry_delay(ctx.settings, attempt)
    if delay is not None:
        return Settled("retry", wait_s=delay)
    await upload_verdict(ctx, job, exc, attempt)
    await ctx.blobs.release(job.blob, upload_holder(job.artifact_id))
    return Settled("failed")


async def follow_up(ctx: IoContext, batch: UploadBatch, settled: Sequence[Settled]) -> None:
    """What must run again does, as a batch of its own: retried uploads on their next try
    after the retry delay; deferred ones when the breaker may let them through (at least every
    breaker_defer_s). Deterministic job ids: a re-run of this batch enqueues nothing twice."""
    pairs = list(zip(batch.uploads, settled, strict=True))
    retry = [(job, s) for job, s in pairs if s.kind == "retry"]
    if retry:
        again = UploadBatch(
            uploads=[job for job, _ in retry], attempt=batch.attempt + 1, deferrals=batch.deferrals
        )
        await enqueue_batch(ctx.redis, ctx.queue, again, defer_s=max(s.wait_s for _, s in retry))
    deferred = [(job, s) for job, s in pairs if s.kind == "deferred"]
    if deferred:
        wait_s = deferral_s(ctx, min(s.wait_s for _, s in deferred))
        later = UploadBatch(
            uploads=[job for job, _ in deferred],
            attempt=batch.attempt,
            deferrals=batch.deferrals + 1,
        )
        await enqueue_batch(ctx.redis, ctx.queue, later, defer_s=wait_s)
        log.warning("upload.deferred", uploads=len(deferred), retry_in_s=round(wait_s, 2))


@role_job(UPLOAD)
async def upload(ctx: IoContext, run: JobRun, job: UploadJob) -> UploadOutcome:
    """Copy one blob to its key: a batch of one (one path for retries, deferrals, give-ups).
    Idempotent: an already-uploaded artifact is not re-sent."""
    return await upload_all(ctx, run, UploadBatch(uploads=[job], deferrals=job.deferrals))


@role_job(UPLOAD_BATCH)
async def upload_batch(ctx: IoContext, run: JobRun, batch: UploadBatch) -> UploadOutcome:
    """Uploads produced together, in one job: its bookkeeping (claim, payload, finish, state
    reads, records) is paid once for all of them, while each upload keeps its own artifact
    state, retries and dead letter — one upload's failure never fails or repeats another."""
    return await upload_all(ctx, run, batch)


async def upload_all(ctx: IoContext, run: JobRun, batch: UploadBatch) -> UploadOutcome:
    crash = run.crash_loop()
    async with read_states(ctx, batch.uploads) as states:
        settled = await asyncio.gather(
            *(
                settle(ctx, job, state, batch.attempt, crash)
                for job, state in zip(batch.uploads, states, strict=True)
            )
        )
    done = [(job, s.result) for job, s in zip(batch.uploads, settled, strict=True) if s.result]
    unknown = {job.artifact_id for job in await record(ctx, done)}
    if unknown:
        settled = [
            await unrecorded(ctx, job, batch.attempt) if job.artifact_id in unknown else s
            for job, s in zip(batch.uploads, settled, strict=True)
        ]
    await follow_up(ctx, batch, settled)
    counts: Counter[str] = Counter(s.kind for s in settled)
    if counts["failed"] or counts["retry"] or counts["deferred"]:
        run.outcome = "failed" if counts["failed"] else "retried" if counts["retry"] else "deferred"
    return UploadOutcome(
        ok=not counts["failed"],
        done=counts["done"],
        skipped_uploads=counts["skipped"],
        retry=counts["retry"],
        deferred=counts["deferred"],
        failed=counts["failed"],
    )


def worker_options(settings: Settings) -> dict[str, Any]:
    return role_worker_options(
        settings,
        queue=QueueNames.from_settings(settings).io,
        jobs=[upload, upload_batch],
        timeout_s=settings.io_job_timeout_s,
        # More jobs than S3 slots: Redis bookkeeping of some overlaps the S3 requests of others;
        # the store's semaphore keeps S3 requests in flight at io_concurrency.
        max_jobs=settings.io_concurrency * 2,
        startup=startup,
        shutdown=shutdown,
        # Nobody reads an upload's arq result (the artifact's state is the record): not
        # writing it saves a Redis write per upload.
        keep_result=0,
    )


WorkerSettings = worker_settings_class("io", worker_options(import_settings("io")))
"""``arq workers.io.WorkerSettings``: built from ``PLANTPIPE_*`` at import."""
