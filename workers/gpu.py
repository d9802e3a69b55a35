"""gpu role: ``infer_photo`` — one child of a session's fan-out, run in the inference pool.

Run with ``arq workers.gpu.WorkerSettings``. ONNX Runtime sessions live in a spawn-based
process pool next to this asyncio worker (CUDA when present, CPU otherwise).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from arq.jobs import Job, JobStatus

from pipeline.artifacts import ArtifactStore
from pipeline.blobs import BlobStore
from pipeline.client import enqueue_upload, upload_holder
from pipeline.graph import JoinStore
from pipeline.inference.config import InferenceConfig
from pipeline.inference.pool import InferencePool
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
from pipeline.photos import (
    artifact_id,
    child_id,
    infer_holder,
    photo_key,
    render_holder,
    render_job_id,
    session_join_id,
)
from pipeline.queue import QueueNames, enqueue
from pipeline.schemas import (
    ArtifactRecord,
    ChildReport,
    InferJob,
    PhotoProgress,
    RenderJob,
    UploadJob,
)
from pipeline.sessions import SessionStore
from pipeline.settings import Settings, get_settings
from pipeline.vision.render import JPEG_CONTENT_TYPE

log = get_logger("workers.gpu")


async def startup(ctx: dict[str, Any]) -> None:
    settings = await role_startup(ctx, "gpu")
    pool = InferencePool(InferenceConfig.from_settings(settings))
    await pool.start()  # models load and warm up now: errors surface at start, not mid-job
    ctx["pool"] = pool
    ctx["started"] = True
    log.info("gpu.started", processes=settings.pool_processes, providers=pool.providers)


async def shutdown(ctx: dict[str, Any]) -> None:
    pool: InferencePool | None = ctx.get("pool")
    if pool is not None:
        await pool.close()
    await role_shutdown(ctx)
    log.info("gpu.stopped")


async def infer_photo(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Analyse one photo and report into the session's join (exactly once)."""
    job = InferJob.model_validate(payload)
    sid, index = job.session_id, job.index
    structlog.contextvars.bind_contextvars(session_id=sid, photo=index)
    settings: Settings = ctx["settings"]
    sessions: SessionStore = ctx["sessions"]
    joins: JoinStore = ctx["joins"]
    blobs: BlobStore = ctx["blobs"]
    join_id = session_join_id(sid)

    render_started = await Job(
        render_job_id(sid, index), ctx["redis"], _queue_name=ctx["queues"].cpu
    ).status()
    if (
        await joins.is_complete(join_id)
        or await joins.has_reported(join_id, child_id(index))
        or render_started != JobStatus.not_found
    ):
        # A re-run after a crash that followed this photo's hand-over to render_photo.
        log.info("infer.skipped", why="photo already analysed")
        ctx["outcome"] = "ok"
        await blobs.release(job.blob, infer_holder(sid, index))
        return {"ok": True, "skipped": True}

    await sessions.transition(sid, "processing", stage="inference")
    await sessions.update_photo(sid, PhotoProgress(index=index, state="processing"))
    try:
        check_crash_loop(ctx)
        async with asyncio.timeout(time_budget(settings.gpu_job_timeout_s)):
            data = await blobs.get(job.blob)
            pool: InferencePool = ctx["pool"]
            output = await pool.analyze(data)
    except Exception as exc:

        async def give_up(code: str, reason: str) -> None:
            progress = PhotoProgress(index=index, state="failed", error_code=code, reason=reason)
            await sessions.update_photo(sid, progress)
            await joins.report(
                join_id, child_id(index), ChildReport(ok=False, error_code=code, reason=reason)
            )
            await blobs.release(job.blob, infer_holder(sid, index))
            await blobs.release(job.blob, render_holder(sid, index))  # no render will run

        return await handle_failure(
            ctx,
            exc,
            function="infer_photo",
            queue=ctx["queues"].gpu,
            kwargs={"payload": payload},
            session_id=sid,
            on_give_up=give_up,
            replayable=False,
        )

    # The original's thumbnail goes to the io role now; nothing here waits for S3.
    thumb_id = artifact_id(sid, index, "thumbnail_original")
    thumb_key = photo_key(sid, index, job.photo_count, "thumbnail_original")
    thumb = await blobs.put(output.thumbnail_jpeg, [upload_holder(thumb_id)])
    artifacts: ArtifactStore = ctx["artifacts"]
    await artifacts.register(
        [
            ArtifactRecord(
                artifact_id=thumb_id,
                key=thumb_key,
                content_type=JPEG_CONTENT_TYPE,
                size=thumb.size,
                session_id=sid,
            )
        ],
        session_id=sid,
    )
    await enqueue_upload(
        ctx["redis"],
        settings,
        UploadJob(
            artifact_id=thumb_id,
            key=thumb_key,
            blob=thumb,
            content_type=JPEG_CONTENT_TYPE,
            session_id=sid,
        ),
    )
    analysis = output.analysis
    # The count is recorded now: the visualization is a by-product that cannot lose it.
    await sessions.update_photo(
        sid,
        PhotoProgress(
            index=index,
            state="processing",
            detected=analysis.total_detected,
            estimated=analysis.total_estimated,
        ),
    )
    vegetation = None
    if output.vegetation_png:
        vegetation = await blobs.put(output.vegetation_png, [render_holder(sid, index)])
    # Next step of this photo's chain: render_photo on the cpu role reports into the join.
    render = RenderJob(
        session_id=sid,
        index=index,
        photo_count=job.photo_count,
        blob=job.blob,
        analysis=analysis.model_dump(mode="json"),
        vegetation=vegetation,
    )
    await enqueue(
        ctx["redis"],
        "render_photo",
        payload=render.model_dump(mode="json"),
        _job_id=render_job_id(sid, index),
        _queue_name=ctx["queues"].cpu,
    )
    await blobs.release(job.blob, infer_holder(sid, index))
    ctx["outcome"] = "ok"
    log.info(
        "infer.done",
        detected=analysis.total_detected,
        estimated=analysis.total_estimated,
        provider=analysis.provider,
        timings_ms=analysis.timings_ms,
    )
    return {"ok": True, "detected": analysis.total_detected}


def worker_options(settings: Settings) -> dict[str, Any]:
    return role_worker_options(
        settings,
        queue=QueueNames.from_settings(settings).gpu,
        jobs=[infer_photo],
        timeout_s=settings.gpu_job_timeout_s,
        max_jobs=settings.gpu_max_jobs,
        startup=startup,
        shutdown=shutdown,
    )


WorkerSettings = worker_settings_class("gpu", worker_options(get_settings()))
"""``arq workers.gpu.WorkerSettings``: built from ``PLANTPIPE_*`` at import."""
