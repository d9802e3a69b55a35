"""io role: every S3 (or local store) write, on asyncio, at most ``io_concurrency`` at once.

Run with ``arq workers.io.WorkerSettings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.logs import get_logger
from pipeline.runtime import metrics
from pipeline.runtime.context import RoleContext
from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.job import GaveUp, JobRun, role_job, time_budget
from pipeline.runtime.retry import classify
from pipeline.runtime.roles import (
    role_shutdown,
    role_started,
    role_startup,
    role_worker_options,
    worker_settings_class,
)
from pipeline.runtime.uploads import upload_holder, upload_job_id
from pipeline.schemas import UploadJob
from pipeline.settings import Settings, get_settings
from pipeline.state.redisio import run_lua_batch
from pipeline.storage import ObjectStore, PutResult, make_store
from pipeline.storage.breaker import Permit, RedisCircuitBreaker

log = get_logger("workers.io")


@dataclass
class IoContext(RoleContext):
    """The io role's context: the object store and the circuit breaker in front of it."""

    store: ObjectStore
    breaker: RedisCircuitBreaker


async def startup(ctx: dict[str, Any]) -> None:
    settings, redis = await role_startup(ctx, "io")
    store: ObjectStore = ctx.get("store") or make_store(settings)
    await store.start()  # bucket reachable (created when PLANTPIPE_S3_CREATE_BUCKET=1)
    breaker = RedisCircuitBreaker(redis, settings)
    await role_started(ctx, IoContext.build("io", redis, settings, store=store, breaker=breaker))
    log.info(
        "io.started",
        store=store.description,
        concurrency=settings.io_concurrency,
        retry_delays_s=settings.retry_delays_s,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    store: ObjectStore | None = ctx.get("store")
    context = ctx.get("role_context")
    if isinstance(context, IoContext):
        store = context.store
    if store is not None:
        await store.close()
    await role_shutdown(ctx)
    log.info("io.stopped")


async def defer(ctx: IoContext, job: UploadJob, permit: Permit) -> dict[str, Any]:
    """The breaker is open: ask again when it may allow the call, but at least every
    breaker_defer_s (a half-open trial usually settles in milliseconds), as a deferred job."""
    wait_s = max(0.2, min(permit.wait_s, ctx.settings.breaker_defer_s))
    deferred = job.model_copy(update={"deferrals": job.deferrals + 1})
    await ctx.redis.enqueue_job(
        "upload",
        payload=deferred.model_dump(mode="json"),
        _job_id=upload_job_id(job.artifact_id, deferred.deferrals),
        _queue_name=ctx.queue,
        _defer_by=wait_s,
    )
    log.warning(
        "upload.deferred",
        key=job.key,
        breaker=permit.state,
        retry_in_s=round(wait_s, 2),
        deferrals=deferred.deferrals,
    )
    return {"ok": False, "deferred_s": wait_s}


async def record(ctx: IoContext, job: UploadJob, result: PutResult) -> None:
    """One round trip: the artifact is uploaded, the upload lets go of its bytes."""
    if await ctx.breaker.record_success() != "closed":
        log.info("breaker.closed", store=ctx.store.description)
    moved, _left = await run_lua_batch(
        ctx.redis,
        [
            ctx.artifacts.transition_call(
                job.artifact_id, "uploaded", session_id=job.session_id, etag=result.etag
            ),
            ctx.blobs.release_call(job.blob, upload_holder(job.artifact_id)),
        ],
    )
    _, ready = ctx.artifacts.transition_result(moved)
    metrics.UPLOAD_BYTES.inc(result.size)
    log.info(
        "upload.done",
        key=job.key,
        bytes=result.size,
        multipart=result.multipart,
        artifacts_ready=ready,
    )


async def read_state(ctx: IoContext, job: UploadJob) -> tuple[bool, list[Any]]:
    """Whether the artifact is uploaded already, and the raw reply for its bytes when they
    were read in the same round trip (checked in the guarded work). While S3 is healthy one
    round trip reads both (the bytes are wasted only for a re-run job); otherwise the bytes
    are read only once the breaker lets the call go."""
    prefetch = ctx.breaker.trusted_closed()
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(ctx.artifacts.key(job.artifact_id))
        if prefetch:
            pipe.get(ctx.blobs.key(job.blob))
        replies = await pipe.execute()
    current = ctx.artifacts.parse(replies[0])
    return current is not None and current.state == "uploaded", replies[1:]


@role_job(UploadJob)
async def upload(ctx: IoContext, run: JobRun, job: UploadJob) -> dict[str, Any]:
    """Copy one blob to its key. Idempotent: an already-uploaded artifact is not re-sent."""
    uploaded, prefetched = await read_state(ctx, job)
    if uploaded:
        await ctx.blobs.release(job.blob, upload_holder(job.artifact_id))
        log.info("upload.already_done", key=job.key)
        return {"ok": True, "key": job.key, "skipped": True}
    permit = await ctx.breaker.allow()
    if not permit.allowed:
        run.outcome = "deferred"
        return await defer(ctx, job, permit)

    async def put() -> PutResult:
        if prefetched:
            body = ctx.blobs.checked(job.blob, prefetched[0])
        else:
            body = await ctx.blobs.get(job.blob)
        return await ctx.store.put(
            job.key, body, content_type=job.content_type, metadata=job.metadata
        )

    async def on_error(exc: Exception) -> None:
        if classify(exc).transient and await ctx.breaker.record_failure() == "open":
            log.warning("breaker.open", store=ctx.store.description)

    async def give_up(code: str, reason: str) -> None:
        await ctx.artifacts.transition(
            job.artifact_id, "failed", session_id=job.session_id, error_code=code, reason=reason
        )

    budget_s = time_budget(ctx.settings.io_job_timeout_s)
    result = await run.guard(put, budget_s=budget_s, on_error=on_error, on_give_up=give_up)
    if isinstance(result, GaveUp):
        return result.summary()
    await record(ctx, job, result)
    return {"ok": True, "key": job.key, "etag": result.etag, "size": result.size}


def worker_options(settings: Settings) -> dict[str, Any]:
    return role_worker_options(
        settings,
        queue=QueueNames.from_settings(settings).io,
        jobs=[upload],
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


WorkerSettings = worker_settings_class("io", worker_options(get_settings()))
"""``arq workers.io.WorkerSettings``: built from ``PLANTPIPE_*`` at import."""
