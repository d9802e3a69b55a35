"""A session's result document, from its join's reports (pure: no I/O)."""

from __future__ import annotations

from pipeline.schemas import (
    ChildReport,
    PhotoReport,
    PhotoResult,
    SessionRecord,
    SessionResult,
    SessionStatus,
    utcnow,
)
from pipeline.state.ids import artifact_id, child_id, photo_key, results_key
from pipeline.vision.outputs import PHOTO_OUTPUTS
from pipeline.vision.types import PhotoAnalysis


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


def photo_result(
    record: SessionRecord, index: int, report: ChildReport[PhotoReport] | None
) -> PhotoResult:
    sid, count = record.session_id, record.photo_count
    original_id = artifact_id(sid, index, "original")
    keys = {
        "original": next((a.key for a in record.artifacts if a.artifact_id == original_id), ""),
        **{o.name: photo_key(sid, index, count, o.name) for o in PHOTO_OUTPUTS.made_by("analysis")},
    }
    if report is None or not report.ok or report.result is None:
        return PhotoResult(
            index=index,
            status="failed",
            error_code=(report.error_code if report else None) or "not_reported",
            reason=(report.reason if report else None) or "the photo's analysis never reported",
            keys=keys,
        )
    analysis = report.result.analysis
    warnings = [*analysis.warnings, *report.result.warnings]
    timings = dict(analysis.timings_ms)
    if report.result.render_ms is not None:
        timings["render"] = report.result.render_ms
    if not report.result.warnings:  # the visualization was made
        for output in PHOTO_OUTPUTS.made_by("render"):
            keys[output.name] = photo_key(sid, index, count, output.name)
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
        timings_ms=timings,
        warnings=warnings,
        keys=keys,
    )


def build_document(
    record: SessionRecord, reports: dict[str, ChildReport[PhotoReport]]
) -> SessionResult:
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
