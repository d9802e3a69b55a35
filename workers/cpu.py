"""cpu role: the ``aggregate`` callback of each session, and the watchdog.

Run with ``arq workers.cpu.WorkerSettings``. ``aggregate`` renders visualizations and the
result document, sets the session's terminal status, enqueues the uploads on the io queue and
returns — it never waits for S3. ``render_photo`` draws each photo's visualization (one job
per photo, so rendering scales with cpu workers, not inside the callback).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from typing import Any

import structlog
from arq import cron

from pipeline.artifacts import ArtifactStore
from pipeline.blobs import BlobStore
from pipeline.client import enqueue_upload, upload_holder
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
from pipeline.vision.decode import decode_image
from pipeline.vision.render import (
    AVIF_CONTENT_TYPE,
    JPEG_CONTENT_TYPE,
    encode_avif,
    make_thumbnail,
    render_visualization,
)
from pipeline.vision.types import PhotoAnalysis

log = get_logger("workers.cpu")


async def startup(ctx: dict[str, Any]) -> None:
    settings = await role_startup(ctx, "cpu")
    ctx["render_slots"] = asyncio.Semaphore(max(1, os.cpu_count() or 1))
    ctx["started"] = True
    log.info("cpu.started", watchdog_interval_s=settings.watchdog_interval_s)


async def shutdown(ctx: dict[str, Any]) -> None:
    await role_shutdown(ctx)
    log.info("cpu.stopped")


def render_outputs(data: bytes, analysis: PhotoAnalysis, settings: Settings) -> tuple[bytes, bytes]:
    """Pure: original bytes + analysis → (AVIF visualization, processed JPEG thumbnail)."""
    rgb = decode_image(data).rgb
    picture = render_visualization(rgb, analysis)
    avif = encode_avif(picture, quality=settings.avif_quality, speed=settings.avif_speed)
    thumb = make_thumbnail(
        picture, longest_side=settings.thumbnail_px, quality=settings.thumbnail_quality
    )
    return avif, thumb


def avg_confidence(analyses: list[PhotoAnalysis]) -> float | None:
    """Mean confidence over every detection of the session (weighted by detections)."""
    confidences = [d.confidence for a in analyses for d in a.detections]
    return round(sum(confidences) / len(confidences), 4) if confidences else None


def session_outcome(photos: list[PhotoResult]) -> tuple[SessionStatus, str | None]:
    failed = [p for p in photos if p.status == "failed"]
    if not failed:
        return "completed", None
    details = "; ".join(f"photo {p.index}: {p.reason or p.error_code}" for p in failed[:5])
    more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
    summary = f"{len(failed)} of {len(photos)} photos failed: {details}{more}"
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
    handed to io; then the photo reports into the session's join (exactly once)."""
    job = RenderJob.model_validate(payload)
    sid, index = job.session_id, job.index
    structlog.contextvars.bind_contextvars(session_id=sid, photo=index)
    settings: Settings = ctx["settings"]
    sessions: SessionStore = ctx["sessions"]
    joins: JoinStore = ctx["joins"]
    blobs: BlobStore = ctx["blobs"]
    join_id = session_join_id(sid)
    analysis = PhotoAnalysis.model_validate(job.analysis)

    async def report(outcome: ChildReport, progress: PhotoProgress) -> None:
        await sessions.update_photo(sid, progress)
        await joins.report(join_id, child_id(index), outcome)
        await blobs.release(job.blob, render_holder(sid, index))

    if await joins.is_complete(join_id):
        await blobs.release(job.blob, render_holder(sid, index))
        ctx["outcome"] = "ok"
        return {"ok": True, "skipped": True}
    try:
        check_crash_loop(ctx)
        async with asyncio.timeout(time_budget(settings.cpu_job_timeout_s)):
            data = await blobs.get(job.blob)
            async with ctx["render_slots"]:
                avif, thumb = await asyncio.to_thread(render_outputs, data, analysis, settings)
    except Exception as exc:

        async def give_up(code: str, reason: str) -> None:
            await report(
                ChildReport(ok=False, error_code=code, reason=f"visualization failed: {reason}"),
                PhotoProgress(index=index, state="failed", error_code=code, reason=reason),
            )

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
    await report(
        ChildReport(ok=True, result={"analysis": job.analysis}),
        PhotoProgress(
            index=index,
            state="done",
            detected=analysis.total_detected,
            estimated=analysis.total_estimated,
        ),
    )
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
        max_jobs=settings.cpu_max_jobs,
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
