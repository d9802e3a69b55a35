"""What the session page shows, as one JSON document: the record, per photo its counts,
per-segment counts, warnings, errors, timings and files, the totals and the event history."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.client import PipelineClient
from pipeline.runtime.metadata import photo_names
from pipeline.schemas import PhotoProgress, PhotoResult, SessionRecord, SessionResult
from pipeline.state.redisio import text, typed
from pipeline.vision.outputs import PHOTO_OUTPUTS

EVENTS_SHOWN = 300


def segment_rows(photo: PhotoResult) -> tuple[list[dict[str, Any]], int]:
    """Per segment: its container, confidence and counts; and the detections outside every
    segment."""
    analysis = photo.analysis
    if analysis is None:
        return [], 0
    detected: dict[int | None, int] = {}
    for d in analysis.detections:
        detected[d.segment_index] = detected.get(d.segment_index, 0) + 1
    estimated = {e.segment_index: e.estimated for e in analysis.estimations}
    rows = [
        {
            "index": s.index,
            "container_type": s.container_type,
            "class_name": s.class_name,
            "confidence": round(s.confidence, 3),
            "detected": detected.get(s.index, 0),
            "estimated": estimated.get(s.index, 0),
            "bands": next(
                (len(e.bands) for e in analysis.estimations if e.segment_index == s.index), 0
            ),
        }
        for s in analysis.segments
    ]
    return rows, detected.get(None, 0)


def photo_view(
    session_id: str,
    progress: PhotoProgress,
    result: PhotoResult | None,
    states: Mapping[str, str],
    name: str | None,
) -> dict[str, Any]:
    i = progress.index
    files = {
        file: {"state": states[aid], "url": f"files/{session_id}/{i}/{file}"}
        for file in PHOTO_OUTPUTS.names()
        if (aid := f"{session_id}:{i}:{file}") in states
    }
    segments, unassigned = segment_rows(result) if result is not None else ([], 0)
    source: Any = result if result is not None else progress
    return {
        "index": i,
        "name": name,
        "state": result.status if result is not None else progress.state,
        "error_code": source.error_code,
        "reason": source.reason,
        "detected": source.detected,
        "estimated": source.estimated,
        "width": result.width if result else None,
        "height": result.height if result else None,
        "provider": result.provider if result else None,
        "avg_confidence": result.avg_confidence if result else None,
        "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()} if result else {},
        "warnings": result.warnings if result else [],
        "segments": segments,
        "unassigned_detected": unassigned,
        "files": files,
    }


def totals(record: SessionRecord, result: SessionResult | None) -> dict[str, Any]:
    if result is not None:
        detected, estimated = result.total_detected, result.total_estimated
        confidence = result.avg_confidence
    else:
        detected = sum(p.detected or 0 for p in record.photos)
        estimated = sum(p.estimated or 0 for p in record.photos)
        confidence = None
    return {
        "detected": detected,
        "estimated": estimated,
        "plants": detected + estimated,
        "avg_confidence": confidence,
        "photos_done": sum(p.state == "done" for p in record.photos),
        "photos_failed": sum(p.state == "failed" for p in record.photos),
    }


async def session_events(client: PipelineClient, session_id: str) -> list[dict[str, Any]]:
    """The session's stream, oldest first (its last ``EVENTS_SHOWN`` events)."""
    raw = await typed(client.redis).xrevrange(
        client.keys.session_events(session_id), count=EVENTS_SHOWN
    )
    events = []
    for entry_id, fields in reversed(raw):
        decoded = {text(k): text(v) for k, v in fields.items()}
        eid = text(entry_id)
        at = datetime.fromtimestamp(int(eid.split("-", 1)[0]) / 1000, UTC)
        try:
            data = json.loads(decoded.get("data", "{}"))
        except ValueError:
            data = {}
        events.append(
            {"id": eid, "at": at.isoformat(), "type": decoded.get("type", ""), "data": data}
        )
    return events


async def session_detail(client: PipelineClient, session_id: str) -> dict[str, Any]:
    """Everything the session page shows. Raises LookupError for an unknown session."""
    record = await client.status(session_id)
    result = await client.sessions.result(session_id)
    states = {a.artifact_id: a.state for a in record.artifacts}
    names = photo_names(record.metadata)
    photos = [
        photo_view(
            session_id,
            progress,
            result.photos[progress.index]
            if result is not None and progress.index < len(result.photos)
            else None,
            states,
            names[progress.index] if progress.index < len(names) else None,
        )
        for progress in record.photos
    ]
    results_state = states.get(f"{session_id}:results")
    return {
        "session": record.model_dump(mode="json", exclude={"photos", "artifacts"}),
        "totals": totals(record, result),
        "photos": photos,
        "results": {"state": results_state, "url": f"files/{session_id}/results.json"}
        if results_state
        else None,
        "artifacts": {
            "total": len(record.artifacts),
            "uploaded": record.artifacts_uploaded,
            "failed": record.artifacts_failed,
            "ready": record.artifacts_ready,
        },
        "events": await session_events(client, session_id),
    }
