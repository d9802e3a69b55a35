"""cpu role: the ``aggregate`` callback of each session, and the watchdog.

Run with ``arq workers.cpu.WorkerSettings``. ``aggregate`` renders visualizations and the
result document, sets the session's terminal status, enqueues the uploads on the io queue and
returns — it never waits for S3. ``render_photo`` draws each photo's visualization (one job
per photo, so rendering scales with cpu workers, not inside the callback).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from arq import cron

from pipeline.artifacts import ArtifactStore
from pipeline.blobs import BlobStore
from pipeline.client import enqueue_upload, upload_holder
from pipeline.errors import PermanentError
from pipeline.graph import JoinStore
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
    results_key,
    session_join_id,
)
from pipeline.queue import QueueNames
from pipeline.schemas import (
    AggregateJob,
    ArtifactRecord,
    ChildReport,
    PhotoProgress,
    PhotoResult,
    RenderJob,
    SessionRecord,
    SessionResult,
    SessionStatus,
    UploadJob,
    utcnow,
)
from pipeline.sessions import SessionStore
from pipeline.settings import Settings, get_settings
from pipeline.vision.decode import decode_preview
from pipeline.vision.render import (
    AVIF_CONTENT_TYPE,
    JPEG_CONTENT_TYPE,
    draw_analysis,
    encode_avif,
    make_thumbnail,
    overlay_alpha,
)
from pipeline.vision.types import PhotoAnalysis

log = get_logger("workers.cpu")


async def startup(ctx: dict[str, Any]) -> None:
    settings = await role_startup(ctx, "cpu")
    ctx["render_slots"] = asyncio.Semaphore(settings.cpu_concurrency)
    ctx["started"] = True
    log.info(
        "cpu.started",
        watchdog_interval_s=settings.watchdog_interval_s,
        max_jobs=settings.cpu_concurrency,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    await role_shutdown(ctx)
    log.info("cpu.stopped")


def render_outputs(
    data: bytes, analysis: PhotoAnalysis, settings: Settings, vegetation_png: bytes = b""
) -> tuple[bytes, bytes]:
    """Pure: original bytes + analysis (+ the counted vegetation's 1-bit PNG) → (AVIF
    visualization, processed JPEG thumbnail). The picture is drawn at most
    ``visualization_max_px`` on its longest side, from a JPEG decoded at a reduced scale."""
    picture = decode_preview(data, settings.visualization_max_px)
    overlay = overlay_alpha(vegetation_png, picture.size)
    draw_analysis(picture, analysis, overlay=overlay)
    avif = encode_avif(
        picture,
        quality=settings.avif_quality,
        speed=settings.avif_speed,
        max_threads=settings.avif_threads or None,
    )
    thumb = make_thumbnail(
        picture, longest_side=settings.thumbnail_px, quality=settings.thumbnail_quality
    )
    return avif, thumb


async def render_in_slot(
    slots: asyncio.Semaphore, budget_s: float, render: Callable[[], tuple[bytes, bytes]]
) -> tuple[bytes, bytes]:
    """Run ``render`` in a thread once a render slot is free; ``budget_s`` counts from then
    (the work, not the wait). A render past its budget raises ``PermanentError``
    (``render_timeout``): the same drawing would only time out again. Its thread cannot be
    stopped, so its slot stays taken until it really ends — a slow render never lets more
    renders pile onto the cores than there are slots."""
    await slots.acquire()
    started = time.monotonic()
    work = asyncio.ensure_future(asyncio.to_thread(render))
    work.add_done_callback(lambda _: slots.release())
    try:
        return await asyncio.wait_for(asyncio.shield(work), budget_s)
    except TimeoutError as exc:
        raise PermanentError(
            f"drawing the visualization took longer than its budget of {budget_s:.1f} s "
            f"(stopped waiting after {time.monotonic() - started:.1f} s); raise "
            "PLANTPIPE_CPU_JOB_TIMEOUT_S or lower PLANTPIPE_VISUALIZATION_MAX_PX",
            code="render_timeout",
        ) from exc


def avg_confidence(analyses: list[PhotoAnalysis]) -> float | None:
    """Mean confidence over every detection of the session (weighted by detections)."""
    confidences = [d.confidence for a in analyses for d in a.detections]
    return round(sum(confidences) / len(confidences), 4) if confidences else None


def session_outcome(photos: list[PhotoResult]) -> tuple[SessionStatus, str | None]:
    """``completed`` when every photo is done without a caveat; ``warning`` when some photo
    failed or carries a warning (its counts are in the document); ``failed`` when all failed."""
    failed = [p for p in photos if p.status == "failed"]
    cautioned = [p for p in photos if p.status == "done" and p.warnings]
    if not failed and not cautioned:
        return "completed", None
    notes = [f"photo {p.index}: {p.reason or p.error_code}" for p in failed] + [
        f"photo {p.index}: {'; '.join(p.warnings)}" for p in cautioned
    ]
    details = "; ".join(notes[:5]) + (f" (+{len(notes) - 5} more)" if len(notes) > 5 else "")
    parts = []
    if failed:
        parts.append(f"{len(failed)} of {len(photos)} photos failed")
    if cautioned:
        parts.append(f"{len(cautioned)} of {len(photos)} photos done with a warning")
    summary = f"{', '.join(parts)}: {details}"
    return ("failed" if len(failed) == len(photos) else "warning"), summary


async def stage_artifacts(
    ctx: dict[str, Any], session_id: str, outputs: list[tuple[str, str, str, bytes]], final: bool
) -> list[UploadJob]:
    """Store each ``(artifact_id, key, content_type, body)`` as a blob and register the
    artifacts (pending). Returns the upload jobs to hand to the io role."""
    blobs: BlobStore = ctx["blobs"]
    artifacts: ArtifactStore = ctx["artifacts"]
    jobs: list[UploadJob] = []
    records: list[ArtifactRecord] = []
    for aid, key, ctype, body in outputs:
        blob = await blobs.put(body, [upload_holder(aid)])
        records.append(
            ArtifactRecord(
                artifact_id=aid, key=key, content_type=ctype, size=len(body), session_id=session_id
            )
        )
        jobs.append(
            UploadJob(
                artifact_id=aid, key=key, blob=blob, content_type=ctype, session_id=session_id
            )
        )
    await artifacts.register(records, session_id=session_id, final=final)
    return jobs


async def enqueue_uploads(ctx: dict[str, Any], jobs: list[UploadJob]) -> None:
    await asyncio.gather(*(enqueue_upload(ctx["redis"], ctx["settings"], j) for j in jobs))


async def render_photo(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Per-photo fan-out step on the cpu role: AVIF visualization and processed thumbnail,
    handed to io; then the photo reports into the session's join (exactly once).

    The count is the product, the picture a by-product: when the visualization cannot be
    made (it fails, times out, or its inputs are gone) the photo still reports ``done`` with
    its analysis, and a warning that says what failed."""
    job = RenderJob.model_validate(payload)
    sid, index = job.session_id, job.index
    structlog.contextvars.bind_contextvars(session_id=sid, photo=index)
    settings: Settings = ctx["settings"]
    sessions: SessionStore = ctx["sessions"]
    joins: JoinStore = ctx["joins"]
    blobs: BlobStore = ctx["blobs"]
    join_id = session_join_id(sid)
    analysis = PhotoAnalysis.model_validate(job.analysis)
    inputs = [job.blob] if job.vegetation is None else [job.blob, job.vegetation]

    async def release_inputs() -> None:
        for blob in inputs:
            await blobs.release(blob, render_holder(sid, index))

    async def report(warnings: list[str]) -> None:
        outcome = ChildReport(ok=True, result={"analysis": job.analysis, "warnings": warnings})
        progress = PhotoProgress(
            index=index,
            state="done",
            detected=analysis.total_detected,
            estimated=analysis.total_estimated,
            reason="; ".join(warnings) or None,
        )
        await sessions.update_photo(sid, progress)
        await joins.report(join_id, child_id(index), outcome)
        await release_inputs()

    if await joins.is_complete(join_id):
        await release_inputs()
        ctx["outcome"] = "ok"
        return {"ok": True, "skipped": True}
    try:
        check_crash_loop(ctx)
        data = await blobs.get(job.blob)
        vegetation = b"" if job.vegetation is None else await blobs.get(job.vegetation)
        avif, thumb = await render_in_slot(
            ctx["render_slots"],
            time_budget(settings.cpu_job_timeout_s),
            functools.partial(render_outputs, data, analysis, settings, vegetation),
        )
    except Exception as exc:

        async def give_up(code: str, reason: str) -> None:
            await report([f"visualization failed ({code}): {reason}; the counts are kept"])

        return await handle_failure(
            ctx,
            exc,
            function="render_photo",
            queue=ctx["queues"].cpu,
            kwargs={"payload": payload},
            session_id=sid,
            on_give_up=give_up,
            replayable=False,
        )
    outputs = [
        (artifact_id(sid, index, name), photo_key(sid, index, job.photo_count, name), ctype, body)
        for name, ctype, body in (
            ("processed", AVIF_CONTENT_TYPE, avif),
            ("thumbnail_processed", JPEG_CONTENT_TYPE, thumb),
        )
    ]
    await enqueue_uploads(ctx, await stage_artifacts(ctx, sid, outputs, final=False))
    await report([])
    ctx["outcome"] = "ok"
    log.info("render.done", avif_bytes=len(avif), thumbnail_bytes=len(thumb))
    return {"ok": True, "avif_bytes": len(avif)}


def photo_result(record: SessionRecord, index: int, report: ChildReport | None) -> PhotoResult:
    sid, count = record.session_id, record.photo_count
    original_id = artifact_id(sid, index, "original")
    keys = {
        "original": next((a.key for a in record.artifacts if a.artifact_id == original_id), ""),
        "thumbnail_original": photo_key(sid, index, count, "thumbnail_original"),
    }
    if report is None or not report.ok:
        return PhotoResult(
            index=index,
            status="failed",
            error_code=report.error_code if report else "not_reported",
            reason=report.reason if report else "the photo's analysis never reported",
            keys=keys,
        )
    analysis = PhotoAnalysis.model_validate(report.result["analysis"])
    warnings = [*analysis.warnings, *report.result.get("warnings", [])]
    if not report.result.get("warnings"):  # the visualization was made
        for name in ("processed", "thumbnail_processed"):
            keys[name] = photo_key(sid, index, count, name)
    return PhotoResult(
        index=index,
        status="done",
        width=analysis.width,
        height=analysis.height,
        analysis=analysis,
        detected=analysis.total_detected,
        estimated=analysis.total_estimated,
        avg_confidence=avg_confidence([analysis]),
        provider=analysis.provider,
        timings_ms=analysis.timings_ms,
        warnings=warnings,
        keys=keys,
    )


def build_document(record: SessionRecord, reports: dict[str, ChildReport]) -> SessionResult:
    """The result document from the join's reports (pure)."""
    sid = record.session_id
    photos = [photo_result(record, i, reports.get(child_id(i))) for i in range(record.photo_count)]
    status, reason = session_outcome(photos)
    if record.terminal:  # e.g. the watchdog failed it at its deadline: that verdict stands
        status, reason = record.status, record.reason
    return SessionResult(
        session_id=sid,
        status=status,
        reason=reason,
        photos=photos,
        total_detected=sum(p.detected for p in photos),
        total_estimated=sum(p.estimated for p in photos),
        avg_confidence=avg_confidence([p.analysis for p in photos if p.analysis is not None]),
        metadata=record.metadata,
        created_at=record.created_at,
        completed_at=utcnow(),
        keys={"results": results_key(sid)},
    )


async def aggregate(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Fan-in callback: totals, results.json, terminal status, uploads queued. Never waits
    for S3 and does no image work (each photo was rendered by its own render_photo job)."""
    job = AggregateJob.model_validate(payload)
    sid = job.session_id
    structlog.contextvars.bind_contextvars(session_id=sid)
    sessions: SessionStore = ctx["sessions"]
    joins: JoinStore = ctx["joins"]
    join_id = session_join_id(sid)
    started = time.perf_counter()

    record = await sessions.get(sid)
    if record is None:
        log.warning("aggregate.no_session")
        await joins.complete(join_id)
        return {"ok": False, "reason": "session expired"}
    # The document is computed once and stored first; everything after it is derived from
    # the stored document, so a re-run after a crash at any point repeats identical,
    # idempotent steps (same results.json bytes → same blob, same artifact, same job ids).
    document = await sessions.result(sid)
    rerun = document is not None
    if document is None:
        document = build_document(record, await joins.results(join_id))
        await sessions.set_result(sid, document)
    status, reason = document.status, document.reason
    body = document.model_dump_json(indent=2).encode()
    outputs = [(artifact_id(sid, None, "results"), results_key(sid), "application/json", body)]
    # Register the last artifact *before* the terminal event, so a client woken by that
    # event finds everything in place.
    plan = await stage_artifacts(ctx, sid, outputs, final=True)
    changed = await sessions.transition(sid, status, reason=reason, stage="done")
    await enqueue_uploads(ctx, plan)
    await joins.complete(join_id)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    ctx["outcome"] = "ok"
    log.info(
        "aggregate.done",
        status=status if changed else f"{status} (kept {record.status})",
        rerun=rerun,
        total_detected=document.total_detected,
        total_estimated=document.total_estimated,
        elapsed_ms=elapsed_ms,
    )
    return {"ok": True, "status": status, "elapsed_ms": elapsed_ms, "rerun": rerun}


async def watchdog(ctx: dict[str, Any]) -> dict[str, Any]:
    """End sessions past their deadline as ``failed``; re-drive joins whose callback was lost."""
    sessions: SessionStore = ctx["sessions"]
    joins: JoinStore = ctx["joins"]
    blobs: BlobStore = ctx["blobs"]
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


WorkerSettings = worker_settings_class("cpu", worker_options(get_settings()))
"""``arq workers.cpu.WorkerSettings``: built from ``PLANTPIPE_*`` at import."""
