"""io role: every S3 (or local store) write, on asyncio, at most ``io_concurrency`` at once.

Run with ``arq workers.io.WorkerSettings``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from arq.connections import ArqRedis

from pipeline import metrics
from pipeline.artifacts import ArtifactStore
from pipeline.blobs import BlobStore
from pipeline.client import upload_holder, upload_job_id
from pipeline.jobs import (
    check_crash_loop,
    handle_failure,
    role_shutdown,
    role_startup,
    role_worker_options,
    time_budget,
    worker_settings_class,
)
from pipeline.logs import get_logger
from pipeline.queue import QueueNames, classify
from pipeline.redisio import run_lua_batch
from pipeline.schemas import UploadJob
from pipeline.settings import Settings, get_settings
from pipeline.storage import ObjectStore, make_store
from pipeline.storage.breaker import RedisCircuitBreaker

log = get_logger("workers.io")


async def startup(ctx: dict[str, Any]) -> None:
    settings = await role_startup(ctx, "io")
    store: ObjectStore = ctx.get("store") or make_store(settings)
    await store.start()  # bucket reachable (created when PLANTPIPE_S3_CREATE_BUCKET=1)
    ctx["store"] = store
    ctx["breaker"] = RedisCircuitBreaker(ctx["redis"], settings)
    ctx["started"] = True
    log.info(
        "io.started",
        store=store.description,
        concurrency=settings.io_concurrency,
        retry_delays_s=settings.retry_delays_s,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    store: ObjectStore | None = ctx.get("store")
    if store is not None:
        await store.close()
    await role_shutdown(ctx)
    log.info("io.stopped")


async def upload(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Copy one blob to its key. Idempotent: an already-uploaded artifact is not re-sent."""
    job = UploadJob.model_validate(payload)
    structlog.contextvars.bind_contextvars(session_id=job.session_id, artifact=job.artifact_id)
    settings: Settings = ctx["settings"]
    artifacts: ArtifactStore = ctx["artifacts"]
    blobs: BlobStore = ctx["blobs"]
    breaker: RedisCircuitBreaker = ctx["breaker"]
    store: ObjectStore = ctx["store"]
    queues: QueueNames = ctx["queues"]

    # While S3 is healthy one round trip reads the artifact's state and the bytes (wasted only
    # for a re-run job); otherwise the bytes are read only once the breaker lets the call go.
    redis: ArqRedis = ctx["redis"]
    prefetch = breaker.trusted_closed()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(artifacts.key(job.artifact_id))
        if prefetch:
            pipe.get(blobs.key(job.blob))
        replies = await pipe.execute()
    current = artifacts.parse(replies[0])
    if current is not None and current.state == "uploaded":
        await blobs.release(job.blob, upload_holder(job.artifact_id))
        ctx["outcome"] = "ok"
        log.info("upload.already_done", key=job.key)
        return {"ok": True, "key": job.key, "skipped": True}

    permit = await breaker.allow()
    if not permit.allowed:
        # Ask again when the breaker may allow it, but at least every breaker_defer_s: a
        # half-open trial usually settles in milliseconds.
        wait_s = max(0.2, min(permit.wait_s, settings.breaker_defer_s))
        deferred = job.model_copy(update={"deferrals": job.deferrals + 1})
        await redis.enqueue_job(
            "upload",
            payload=deferred.model_dump(mode="json"),
            _job_id=upload_job_id(job.artifact_id, deferred.deferrals),
            _queue_name=queues.io,
            _defer_by=wait_s,
        )
        log.warning(
            "upload.deferred",
            key=job.key,
            breaker=permit.state,
            retry_in_s=round(wait_s, 2),
            deferrals=deferred.deferrals,
        )
        ctx["outcome"] = "deferred"
        return {"ok": False, "deferred_s": wait_s}

    try:
        check_crash_loop(ctx)
        async with asyncio.timeout(time_budget(settings.io_job_timeout_s)):
            data = blobs.checked(job.blob, replies[1]) if prefetch else await blobs.get(job.blob)
            result = await store.put(
                job.key, data, content_type=job.content_type, metadata=job.metadata
            )
    except Exception as exc:
        if classify(exc).transient:
            state = await breaker.record_failure()
            if state == "open":
                log.warning("breaker.open", store=store.description)

        async def give_up(code: str, reason: str) -> None:
            await artifacts.transition(
                job.artifact_id,
                "failed",
                session_id=job.session_id,
                error_code=code,
                reason=reason,
            )

        return await handle_failure(
            ctx,
            exc,
            function="upload",
            queue=queues.io,
            kwargs={"payload": job.model_dump(mode="json")},
            session_id=job.session_id,
            on_give_up=give_up,
        )

    before = await breaker.record_success()
    if before != "closed":
        log.info("breaker.closed", store=store.description)
    moved, _left = await run_lua_batch(  # one round trip: record the upload, let go of the bytes
        redis,
        [
            artifacts.transition_call(
                job.artifact_id, "uploaded", session_id=job.session_id, etag=result.etag
            ),
            blobs.release_call(job.blob, upload_holder(job.artifact_id)),
        ],
    )
    _, ready = artifacts.transition_result(moved)
    ctx["outcome"] = "ok"
    metrics.UPLOAD_BYTES.inc(result.size)
    log.info(
        "upload.done",
        key=job.key,
        bytes=result.size,
        multipart=result.multipart,
        artifacts_ready=ready,
    )
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
