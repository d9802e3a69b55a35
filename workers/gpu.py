"""gpu role: ``infer_photo`` — one child of a session's fan-out, run in the inference pool.

Run with ``arq workers.gpu.WorkerSettings``. ONNX Runtime sessions live in a spawn-based
process pool next to this asyncio worker (CUDA when present, CPU otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arq.jobs import Job, JobStatus

from pipeline.inference.config import InferenceConfig
from pipeline.inference.outputs import AnalysisOutput
from pipeline.inference.pool import InferencePool
from pipeline.logs import get_logger
from pipeline.runtime.context import ROLE_CONTEXT, RoleContext
from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.graph import INFER_PHOTO, RENDER_PHOTO
from pipeline.runtime.job import GaveUp, JobRun, role_job, time_budget
from pipeline.runtime.roles import (
    import_settings,
    role_shutdown,
    role_started,
    role_startup,
    role_worker_options,
    worker_settings_class,
)
from pipeline.runtime.uploads import Output
from pipeline.schemas import (
    ChildReport,
    InferJob,
    InferOutcome,
    PhotoProgress,
    PhotoReport,
    RenderJob,
)
from pipeline.settings import Settings
from pipeline.state.ids import (
    artifact_id,
    child_id,
    infer_holder,
    photo_key,
    render_holder,
    render_job_id,
    session_join_id,
)
from pipeline.vision.outputs import PHOTO_OUTPUTS

log = get_logger("workers.gpu")


@dataclass
class GpuContext(RoleContext):
    """The gpu role's context: the inference pool."""

    pool: InferencePool


async def startup(ctx: dict[str, Any]) -> None:
    settings, redis = await role_startup(ctx, "gpu")
    pool = InferencePool(InferenceConfig.from_settings(settings))
    await pool.start()  # models load and warm up now: errors surface at start, not mid-job
    await role_started(ctx, GpuContext.build("gpu", redis, settings, pool=pool))
    log.info("gpu.started", processes=settings.pool_processes, providers=pool.providers)


async def shutdown(ctx: dict[str, Any]) -> None:
    context = ctx.get(ROLE_CONTEXT)
    if isinstance(context, GpuContext):
        await context.pool.close()
    await role_shutdown(ctx)
    log.info("gpu.stopped")


async def already_analysed(ctx: GpuContext, job: InferJob) -> bool:
    """A re-run after a crash that followed this photo was passed to render_photo."""
    join_id = session_join_id(job.session_id)
    render = Job(render_job_id(job.session_id, job.index), ctx.redis, _queue_name=ctx.queues.cpu)
    return (
        await render.status() != JobStatus.not_found
        or await ctx.joins.is_complete(join_id)
        or await ctx.joins.has_reported(join_id, child_id(job.index))
    )


async def pass_to_render(ctx: GpuContext, job: InferJob, output: AnalysisOutput) -> None:
    """Record the count, queue the original's thumbnail upload and the photo's render_photo
    job on the cpu role (which reports into the join); nothing here waits for S3."""
    sid, index, analysis = job.session_id, job.index, output.analysis
    thumb = PHOTO_OUTPUTS["thumbnail_original"]  # the one output the analysis makes
    await ctx.upload(
        [
            Output(
                artifact_id(sid, index, thumb.name),
                photo_key(sid, index, job.photo_count, thumb.name),
                thumb.content_type,
                output.thumbnail_jpeg,
            )
        ],
        sid,
    )
    # The count is recorded now: the visualization is a by-product that cannot lose it.
    progress = PhotoProgress(
        index=index,
        state="processing",
        detected=analysis.total_detected,
        estimated=analysis.total_estimated,
    )
    await ctx.sessions.update_photo(sid, progress)
    vegetation = None
    if output.vegetation_png:
        vegetation = await ctx.blobs.put(output.vegetation_png, [render_holder(sid, index)])
    render = RenderJob(
        session_id=sid,
        index=index,
        photo_count=job.photo_count,
        blob=job.blob,
        analysis=analysis,
        vegetation=vegetation,
    )
    await RENDER_PHOTO.enqueue(ctx.redis, ctx.queues, render, job_id=render_job_id(sid, index))


async def analysed_before(ctx: GpuContext, run: JobRun, job: InferJob) -> bool:
    """Whether an earlier run did this job's work: the photo is analysed (its hold on the
    photo is let go here), or — in a re-run after a failover, where that shortcut is not
    trusted — the photo's bytes are gone, let go by the interrupted run and its render
    (:meth:`JobRun.finished_before_failover`)."""
    if await run.after_failover():
        done = await run.finished_before_failover(job.blob)
        if done:
            log.info("infer.skipped", why="finished before the failover")
        return done
    if await already_analysed(ctx, job):
        log.info("infer.skipped", why="photo already analysed")
        await ctx.blobs.release(job.blob, infer_holder(job.session_id, job.index))
        return True
    return False


@role_job(INFER_PHOTO, replayable=False)
async def infer_photo(ctx: GpuContext, run: JobRun, job: InferJob) -> InferOutcome:
    """Analyse one photo and hand it to render_photo (which reports into the join once)."""
    sid, index = job.session_id, job.index
    if await analysed_before(ctx, run, job):
        return InferOutcome(skipped=True)
    await ctx.sessions.transition(sid, "processing", stage="inference")
    await ctx.sessions.update_photo(sid, PhotoProgress(index=index, state="processing"))

    async def analyze() -> AnalysisOutput:
        return await ctx.pool.analyze(await ctx.blobs.get(job.blob))

    async def give_up(code: str, reason: str) -> None:
        progress = PhotoProgress(index=index, state="failed", error_code=code, reason=reason)
        await ctx.sessions.update_photo(sid, progress)
        report: ChildReport[PhotoReport] = ChildReport(ok=False, error_code=code, reason=reason)
        await ctx.joins.report(session_join_id(sid), child_id(index), report)
        await ctx.blobs.release(job.blob, infer_holder(sid, index))
        await ctx.blobs.release(job.blob, render_holder(sid, index))  # no render will run

    budget_s = time_budget(ctx.settings.gpu_job_timeout_s)
    output = await run.guard(analyze, budget_s=budget_s, on_give_up=give_up)
    if isinstance(output, GaveUp):
        return output.outcome(InferOutcome)
    await pass_to_render(ctx, job, output)
    await ctx.blobs.release(job.blob, infer_holder(sid, index))
    analysis = output.analysis
    log.info(
        "infer.done",
        detected=analysis.total_detected,
        estimated=analysis.total_estimated,
        provider=analysis.provider,
        timings_ms=analysis.timings_ms,
    )
    return InferOutcome(detected=analysis.total_detected)


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


WorkerSettings = worker_settings_class("gpu", worker_options(import_settings("gpu")))
"""``arq workers.gpu.WorkerSettings``: built from ``PLANTPIPE_*`` at import."""
