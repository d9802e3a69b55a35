"""cpu role: each photo's ``render_photo``, each session's ``aggregate`` callback, the watchdog.

Run with ``arq workers.cpu.WorkerSettings``. ``render_photo`` draws one photo's visualization
(one job per photo, so rendering scales with cpu workers) and reports the photo into its
session's join; ``aggregate`` (the join's callback) builds the result document, sets the
session's terminal status and queues the uploads on the io role — it never waits for S3 and
does no image work.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from arq import cron

from pipeline.logs import get_logger
from pipeline.runtime.context import RoleContext, role_context
from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.graph import AGGREGATE, RENDER_PHOTO
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
    AggregateJob,
    AggregateOutcome,
    ChildReport,
    PhotoProgress,
    PhotoReport,
    RenderJob,
    RenderOutcome,
)
from pipeline.settings import Settings
from pipeline.state.ids import (
    artifact_id,
    child_id,
    infer_holder,
    photo_key,
    render_holder,
    results_key,
    session_join_id,
)
from pipeline.vision.outputs import PHOTO_OUTPUTS
from workers.document import build_document
from workers.rendering import render_in_slot, render_outputs

log = get_logger("workers.cpu")


@dataclass
class CpuContext(RoleContext):
    """The cpu role's context: slots that bound renders running at once."""

    render_slots: asyncio.Semaphore


async def startup(ctx: dict[str, Any]) -> None:
    settings, redis = await role_startup(ctx, "cpu")
    slots = asyncio.Semaphore(settings.cpu_concurrency)
    await role_started(ctx, CpuContext.build("cpu", redis, settings, render_slots=slots))
    log.info(
        "cpu.started",
        watchdog_interval_s=settings.watchdog_interval_s,
        max_jobs=settings.cpu_concurrency,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    await role_shutdown(ctx)
    log.info("cpu.stopped")


async def report_rendered(
    ctx: CpuContext, job: RenderJob, warnings: list[str], render_ms: float | None = None
) -> None:
    """The photo is done (with ``warnings`` when its visualization could not be made): its
    progress, its one report into the session's join, and its inputs let go."""
    sid, index, analysis = job.session_id, job.index, job.analysis
    report = PhotoReport(analysis=analysis, warnings=warnings, render_ms=render_ms)
    outcome: ChildReport[PhotoReport] = ChildReport(ok=True, result=report)
    progress = PhotoProgress(
        index=index,
        state="done",
        detected=analysis.total_detected,
        estimated=analysis.total_estimated,
        reason="; ".join(warnings) or None,
    )
    await ctx.sessions.update_photo(sid, progress)
    await ctx.joins.report(session_join_id(sid), child_id(index), outcome)
    await release_inputs(ctx, job)


async def release_inputs(ctx: CpuContext, job: RenderJob) -> None:
    for blob in [job.blob] if job.vegetation is None else [job.blob, job.vegetation]:
        await ctx.blobs.release(blob, render_holder(job.session_id, job.index))


async def rendered_before(ctx: CpuContext, job: RenderJob) -> bool:
    """Whether an earlier run did this render's work: its photo reported into the session's
    join, which a run does only after handing its outputs over. Such a run can be repeated
    when Redis could not take arq's record of its end (full at ``maxmemory``, a worker killed,
    a failover); letting go of the inputs, its last step, is done again here (idempotent)."""
    if not await ctx.joins.has_reported(session_join_id(job.session_id), child_id(job.index)):
        return False
    await release_inputs(ctx, job)
    log.info("render.skipped", why="photo already reported")
    return True


def rendered_outputs(job: RenderJob, rendered: dict[str, bytes]) -> list[Output]:
    """The uploads of a photo's rendered outputs (``render_outputs``), as the registry
    declares them (key, content type)."""
    sid, index, count = job.session_id, job.index, job.photo_count
    return [
        Output(
            artifact_id(sid, index, name),
            photo_key(sid, index, count, name),
            PHOTO_OUTPUTS[name].content_type,
            body,
        )
        for name, body in rendered.items()
    ]


async def upload_rendered(ctx: CpuContext, job: RenderJob, rendered: dict[str, bytes]) -> None:
    """Hand the rendered outputs to io. Those that count toward the session's readiness are
    registered as the session's artifacts now, before the photo reports into the join — so
    the session's artifact set is complete when ``aggregate`` marks it final; the others are
    uploaded without the session waiting for them."""
    awaited = {n: b for n, b in rendered.items() if PHOTO_OUTPUTS[n].counts_toward_readiness}
    extra = {n: b for n, b in rendered.items() if n not in awaited}
    if awaited:
        await ctx.upload(rendered_outputs(job, awaited), job.session_id)
    if extra:
        await ctx.upload(rendered_outputs(job, extra))


@role_job(RENDER_PHOTO, replayable=False)
async def render_photo(ctx: CpuContext, run: JobRun, job: RenderJob) -> RenderOutcome:
    """Per-photo fan-out step on the cpu role: AVIF visualization and processed thumbnail,
    handed to io; then the photo reports into the session's join (exactly once).

    The count is the product, the picture a by-product: when the visualization cannot be
    made (it fails, times out, or its inputs are gone) the photo still reports ``done`` with
    its analysis, and a warning that says what failed."""
    if await rendered_before(ctx, job):
        return RenderOutcome(skipped=True)
    budget_s = time_budget(ctx.settings.cpu_job_timeout_s)
    drawn_ms: list[float] = []

    def draw(data: bytes, vegetation: bytes) -> dict[str, bytes]:
        started = time.perf_counter()
        rendered = render_outputs(data, job.analysis, ctx.settings, vegetation)
        drawn_ms.append(round((time.perf_counter() - started) * 1000, 1))
        return rendered

    async def render() -> dict[str, bytes]:
        data = await ctx.blobs.get(job.blob)
        vegetation = b"" if job.vegetation is None else await ctx.blobs.get(job.vegetation)
        return await render_in_slot(
            ctx.render_slots, budget_s, functools.partial(draw, data, vegetation)
        )

    async def give_up(code: str, reason: str) -> None:
        warning = f"visualization failed ({code}): {reason}; the counts are kept"
        await report_rendered(ctx, job, [warning])

    # the budget is render_in_slot's: it counts the drawing, not the wait for a slot
    rendered = await run.guard(render, budget_s=None, on_give_up=give_up)
    if isinstance(rendered, GaveUp):
        return rendered.outcome(RenderOutcome)
    render_ms = drawn_ms[-1]
    await upload_rendered(ctx, job, rendered)
    await report_rendered(ctx, job, [], render_ms)
    sizes = {name: len(body) for name, body in rendered.items()}
    log.info("render.done", bytes=sizes, render_ms=render_ms)
    return RenderOutcome(bytes=sizes, render_ms=render_ms)


@role_job(AGGREGATE)
async def aggregate(ctx: CpuContext, run: JobRun, job: AggregateJob) -> AggregateOutcome:
    """Fan-in callback: totals, results.json, terminal status, uploads queued. Never waits
    for S3 and does no image work (each photo was rendered by its own render_photo job)."""
    sid, join_id, started = job.session_id, session_join_id(job.session_id), time.perf_counter()
    record = await ctx.sessions.get(sid)
    if record is None:
        log.warning("aggregate.no_session")
        await ctx.joins.complete(join_id)
        return AggregateOutcome(ok=False, reason="session expired")
    # The document is computed once and stored first; everything after it is derived from
    # the stored document, so a re-run after a crash at any point repeats identical,
    # idempotent steps (same results.json bytes → same blob, same artifact, same job ids).
    document = await ctx.sessions.result(sid)
    rerun = document is not None
    if document is None:
        document = build_document(record, await ctx.joins.results(join_id, PhotoReport))
        built_ms = round((time.perf_counter() - started) * 1000, 1)
        document = document.model_copy(update={"timings_ms": {"aggregate": built_ms}})
        await ctx.sessions.set_result(sid, document)
    body = document.model_dump_json(indent=2).encode()
    results = Output(artifact_id(sid, None, "results"), results_key(sid), "application/json", body)
    # Register the last artifact *before* the terminal event, so a client woken by that
    # event finds everything in place.
    plan = await ctx.stage([results], sid, final=True)
    status, reason = document.status, document.reason
    changed = await ctx.sessions.transition(sid, status, reason=reason, stage="done")
    await ctx.enqueue_uploads(plan)
    await ctx.joins.complete(join_id)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    log.info(
        "aggregate.done",
        status=status if changed else f"{status} (kept {record.status})",
        rerun=rerun,
        total_detected=document.total_detected,
        total_estimated=document.total_estimated,
        elapsed_ms=elapsed_ms,
    )
    return AggregateOutcome(status=status, elapsed_ms=elapsed_ms, rerun=rerun)


async def watchdog(ctx: dict[str, Any]) -> dict[str, Any]:
    """End sessions past their deadline as ``failed``; re-drive joins whose callback was lost."""
    context = role_context(ctx)
    sessions, joins, blobs = context.sessions, context.joins, context.blobs
    expired: list[str] = []
    for sid in await sessions.overdue():
        record = await sessions.get(sid)
        if record is None:
            continue
        progress = await joins.progress(session_join_id(sid))
        reported = progress.done if progress else 0
        waited = record.deadline_at - record.created_at
        reason = (
            f"deadline exceeded: not finished within {waited / timedelta(seconds=1):.0f} s "
            f"(stage {record.stage}; {reported} of {record.photo_count} photos reported). "
            "Check that gpu and cpu workers are running (`plantpipe workers`)."
        )
        if await sessions.transition(sid, "failed", reason=reason, stage="deadline"):
            expired.append(sid)
            log.warning("session.deadline", session_id=sid, reported=reported)
            await joins.complete(session_join_id(sid))
            for i, original in enumerate(await sessions.originals(sid)):
                await blobs.release(original, infer_holder(sid, i))
                await blobs.release(original, render_holder(sid, i))
    redriven = await joins.redrive()
    ctx["outcome"] = "ok"
    return {"expired": expired, "redriven": redriven}


def _cron_seconds(interval_s: int) -> set[int]:
    step = max(1, min(60, interval_s))
    return set(range(0, 60, step))


def worker_options(settings: Settings) -> dict[str, Any]:
    return role_worker_options(
        settings,
        queue=QueueNames.from_settings(settings).cpu,
        jobs=[render_photo, aggregate],
        timeout_s=settings.cpu_job_timeout_s,
        max_jobs=settings.cpu_concurrency,
        startup=startup,
        shutdown=shutdown,
        cron_jobs=[
            cron(
                watchdog,
                # arq's cron job ids are global to the Redis db: the prefix keeps deployments
                # sharing a db from skipping each other's runs
                name=f"{settings.key_prefix}:watchdog",
                second=_cron_seconds(settings.watchdog_interval_s),
                run_at_startup=True,
                unique=True,
                timeout=max(5, settings.watchdog_interval_s),
                keep_result=0,
            )
        ],
    )


WorkerSettings = worker_settings_class("cpu", worker_options(import_settings("cpu")))
"""``arq workers.cpu.WorkerSettings``: built from ``PLANTPIPE_*`` at import."""
