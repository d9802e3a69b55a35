"""cpu role: the ``aggregate`` callback of each session, and the watchdog.

Run with ``arq workers.cpu.WorkerSettings``. ``aggregate`` renders visualizations and the
result document, sets the session's terminal status, enqueues the uploads on the io queue and
returns — it never waits for S3.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from typing import Any

import structlog
from arq import cron, func
from pipeline.vision.decode import decode_image
from pipeline.vision.render import (
    AVIF_CONTENT_TYPE,
    JPEG_CONTENT_TYPE,
    encode_avif,
    make_thumbnail,
    render_visualization,
)

from pipeline.artifacts import ArtifactStore
from pipeline.blobs import BlobRef, BlobStore
from pipeline.client import enqueue_upload, upload_holder
from pipeline.graph import JoinStore
from pipeline.jobs import (
    common_worker_options,
    handle_failure,
    role_shutdown,
    role_startup,
    worker_settings_class,
)
from pipeline.logs import get_logger
from pipeline.photos import (
    aggregate_holder,
    artifact_id,
    child_id,
    infer_holder,
    photo_key,
    results_key,
    session_join_id,
)
from pipeline.queue import QueueNames, arq_max_tries
from pipeline.schemas import (
    AggregateJob,
    ArtifactRecord,
    ChildReport,
    PhotoResult,
    SessionRecord,
    SessionResult,
    SessionStatus,
    UploadJob,
    utcnow,
)
from pipeline.sessions import SessionStore
from pipeline.settings import Settings, get_settings
from pipeline.vision.types import PhotoAnalysis

log = get_logger("workers.cpu")

_UPLOAD_PLAN = "upload_plan"


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


async def _photo_result(
    ctx: dict[str, Any],
    record: SessionRecord,
    index: int,
    report: ChildReport | None,
    original: BlobRef | None,
) -> tuple[PhotoResult, list[tuple[ArtifactRecord, UploadJob, bytes]]]:
    sid, count = record.session_id, record.photo_count
    settings: Settings = ctx["settings"]
    original_id = artifact_id(sid, index, "original")
    keys = {
        "original": next((a.key for a in record.artifacts if a.artifact_id == original_id), ""),
        "thumbnail_original": photo_key(sid, index, count, "thumbnail_original"),
    }
    if report is None or not report.ok:
        code = report.error_code if report else "not_reported"
        reason = report.reason if report else "the photo's analysis never reported"
        return PhotoResult(
            index=index, status="failed", error_code=code, reason=reason, keys=keys
        ), []
    analysis = PhotoAnalysis.model_validate(report.result["analysis"])
    outputs: list[tuple[ArtifactRecord, UploadJob, bytes]] = []
    try:
        if original is None:
            raise LookupError("original photo reference missing from the session")
        data = await ctx["blobs"].get(original)
        async with ctx["render_slots"]:
            avif, thumb = await asyncio.to_thread(render_outputs, data, analysis, settings)
    except Exception as exc:
        log.error("render.failed", photo=index, error=str(exc))
        return PhotoResult(
            index=index,
            status="failed",
            error_code="render_failed",
            reason=f"visualization failed: {exc}",
            keys=keys,
        ), []
    for name, body, ctype in (
        ("processed", avif, AVIF_CONTENT_TYPE),
        ("thumbnail_processed", thumb, JPEG_CONTENT_TYPE),
    ):
        aid = artifact_id(sid, index, name)
        key = photo_key(sid, index, count, name)
        keys[name] = key
        art = ArtifactRecord(
            artifact_id=aid, key=key, content_type=ctype, size=len(body), session_id=sid
        )
        placeholder = BlobRef(sha256="", size=len(body))
        job = UploadJob(
            artifact_id=aid, key=key, blob=placeholder, content_type=ctype, session_id=sid
        )
        outputs.append((art, job, body))
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
    ), outputs


async def _enqueue_plan(ctx: dict[str, Any], plan: list[UploadJob]) -> None:
    await asyncio.gather(*(enqueue_upload(ctx["redis"], ctx["settings"], j) for j in plan))


async def aggregate(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Fan-in callback: totals, visualizations, results.json, terminal status, uploads."""
    job = AggregateJob.model_validate(payload)
    sid = job.session_id
    structlog.contextvars.bind_contextvars(session_id=sid)
    sessions: SessionStore = ctx["sessions"]
    joins: JoinStore = ctx["joins"]
    join_id = session_join_id(sid)
    started = asyncio.get_running_loop().time()

    record = await sessions.get(sid)
    if record is None:
        log.warning("aggregate.no_session")
        await joins.complete(join_id)
        return {"ok": False, "reason": "session expired"}
    existing_plan = await sessions.get_field(sid, _UPLOAD_PLAN)
    if existing_plan is not None:
        # A re-run (crash after the status was set): make sure every upload is queued.
        plan = [UploadJob.model_validate(j) for j in json.loads(existing_plan)]
        await _enqueue_plan(ctx, plan)
        await joins.complete(join_id)
        log.info("aggregate.rerun", uploads=len(plan))
        ctx["outcome"] = "ok"
        return {"ok": True, "rerun": True}

    try:
        return await _aggregate(ctx, record, started)
    except Exception as exc:

        async def give_up(code: str, reason: str) -> None:
            await sessions.transition(
                sid, "failed", reason=f"aggregation failed: {reason}", stage="aggregate"
            )
            await joins.complete(join_id)

        return await handle_failure(
            ctx,
            exc,
            function="aggregate",
            queue=ctx["queues"].cpu,
            kwargs={"payload": payload},
            session_id=sid,
            on_give_up=give_up,
            replayable=False,
        )


async def _aggregate(ctx: dict[str, Any], record: SessionRecord, started: float) -> dict[str, Any]:
    sid = record.session_id
    sessions: SessionStore = ctx["sessions"]
    joins: JoinStore = ctx["joins"]
    blobs: BlobStore = ctx["blobs"]
    artifacts: ArtifactStore = ctx["artifacts"]
    join_id = session_join_id(sid)

    await sessions.transition(sid, "processing", stage="aggregate")
    reports = await joins.results(join_id)
    originals = await sessions.originals(sid)
    results = await asyncio.gather(
        *(
            _photo_result(
                ctx,
                record,
                i,
                reports.get(child_id(i)),
                originals[i] if i < len(originals) else None,
            )
            for i in range(record.photo_count)
        )
    )
    photos = [r for r, _ in results]
    status, reason = session_outcome(photos)
    analyses = [p.analysis for p in photos if p.analysis is not None]
    result_keys = {"results": results_key(sid)}
    document = SessionResult(
        session_id=sid,
        status=status,
        reason=reason,
        photos=photos,
        total_detected=sum(p.detected for p in photos),
        total_estimated=sum(p.estimated for p in photos),
        avg_confidence=avg_confidence(analyses),
        metadata=record.metadata,
        created_at=record.created_at,
        completed_at=utcnow(),
        keys=result_keys,
    )
    body = document.model_dump_json(indent=2).encode()
    outputs = [o for _, outs in results for o in outs]
    results_id = artifact_id(sid, None, "results")
    outputs.append(
        (
            ArtifactRecord(
                artifact_id=results_id,
                key=result_keys["results"],
                content_type="application/json",
                size=len(body),
                session_id=sid,
            ),
            UploadJob(
                artifact_id=results_id,
                key=result_keys["results"],
                blob=BlobRef(sha256="", size=len(body)),
                content_type="application/json",
                session_id=sid,
            ),
            body,
        )
    )
    plan: list[UploadJob] = []
    for art, upload, data in outputs:
        blob = await blobs.put(data, [upload_holder(art.artifact_id)])
        plan.append(upload.model_copy(update={"blob": blob}))
    await artifacts.register([art for art, _, _ in outputs], session_id=sid, final=True)
    await sessions.set_field(
        sid, _UPLOAD_PLAN, json.dumps([j.model_dump(mode="json") for j in plan])
    )
    await sessions.set_result(sid, document)
    changed = await sessions.transition(sid, status, reason=reason, stage="done")
    await _enqueue_plan(ctx, plan)
    await joins.complete(join_id)
    for original in originals:
        await blobs.release(original, aggregate_holder(sid))
    elapsed_ms = round((asyncio.get_running_loop().time() - started) * 1000, 1)
    log.info(
        "aggregate.done",
        status=status if changed else f"{status} (kept {record.status})",
        total_detected=document.total_detected,
        total_estimated=document.total_estimated,
        uploads=len(plan),
        elapsed_ms=elapsed_ms,
    )
    ctx["outcome"] = "ok"
    return {"ok": True, "status": status, "uploads": len(plan), "elapsed_ms": elapsed_ms}


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
                await blobs.release(original, aggregate_holder(sid))
    redriven = await joins.redrive()
    ctx["outcome"] = "ok"
    return {"expired": expired, "redriven": redriven}


def _cron_seconds(interval_s: int) -> set[int]:
    step = max(1, min(60, interval_s))
    return set(range(0, 60, step))


def worker_options(settings: Settings) -> dict[str, Any]:
    return {
        **common_worker_options(settings),
        "functions": [
            func(
                aggregate,
                name="aggregate",
                timeout=settings.cpu_job_timeout_s,
                max_tries=arq_max_tries(settings),
            )
        ],
        "cron_jobs": [
            cron(
                watchdog,
                name="watchdog",
                second=_cron_seconds(settings.watchdog_interval_s),
                run_at_startup=True,
                unique=True,
                timeout=max(5, settings.watchdog_interval_s),
                keep_result=0,
            )
        ],
        "queue_name": QueueNames.from_settings(settings).cpu,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.cpu_max_jobs,
    }


WorkerSettings = worker_settings_class("cpu", worker_options(get_settings()))
"""``arq workers.cpu.WorkerSettings``: built from ``PLANTPIPE_*`` at import."""
