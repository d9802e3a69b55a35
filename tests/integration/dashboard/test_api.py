"""The JSON API behind the pages, on a real server and Redis: the sessions list, one session,
uploads (the same checks as client.submit), dead letters and their actions, the system."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix

from pipeline.client import PipelineClient
from pipeline.runtime.deadletter import DeadLetters
from pipeline.runtime.metadata import photo_names, photo_names_metadata
from pipeline.schemas import (
    ChildReport,
    DeadLetter,
    PhotoProgress,
    PhotoResult,
    SessionResult,
    utcnow,
)
from pipeline.state.sessions import SessionStore
from pipeline.vision.types import Detection, PhotoAnalysis, SegmentEstimation
from pipeline.vision.types import Segment as VisionSegment
from tests.integration.dashboard.conftest import Served, ServeFactory, jpeg

pytestmark = pytest.mark.integration


def client_of(served: Served) -> PipelineClient:
    return served.board.context.client


async def test_the_api_lists_its_endpoints(serve: ServeFactory) -> None:
    served = await serve()
    index = (await served.http.get("/api/")).json()["endpoints"]
    paths = {(e["method"], e["path"]) for e in index}
    assert ("POST", "/api/sessions") in paths and ("GET", "/api/events") in paths
    assert ("POST", "/api/dead-letters/{letter_id:path}/retry") in paths
    overview = (await served.http.get("/api/overview")).json()
    assert overview["prefix"] == served.settings.key_prefix
    assert overview["max_photos"] == 50 and overview["auth"] == "cookie"


async def test_sessions_page_filters_and_pagination(serve: ServeFactory) -> None:
    served = await serve()
    sessions = client_of(served).sessions
    for i in range(5):
        await sessions.create(f"p{i}", 1, {"bench": f"B-{i}"})
    await sessions.transition("p2", "failed", reason="AccessDenied on the bucket")
    http = served.http
    first = (await http.get("/api/sessions", params={"per_page": 2})).json()
    assert [s["session_id"] for s in first["sessions"]] == ["p4", "p3"]
    assert (first["total"], first["pages"]) == (5, 3)
    failed = (await http.get("/api/sessions", params={"status": "failed"})).json()
    assert [s["session_id"] for s in failed["sessions"]] == ["p2"]
    assert failed["counts"]["failed"] == 1 and failed["counts"]["all"] == 5
    found = (await http.get("/api/sessions", params={"q": "accessdenied"})).json()
    assert [s["session_id"] for s in found["sessions"]] == ["p2"]
    bad = await http.get("/api/sessions", params={"status": "lost"})
    assert bad.status_code == 400 and "status must be one of" in bad.json()["error"]


def analysis() -> PhotoAnalysis:
    segments = [
        VisionSegment(
            index=i, class_name="cajon", container_type="box", confidence=0.9, bbox=(0, 0, 10, 10)
        )
        for i in range(2)
    ]
    detections = [
        Detection(
            cx=1,
            cy=1,
            w=2,
            h=2,
            confidence=0.8,
            class_id=0,
            class_name="plant",
            segment_index=index,
        )
        for index in (0, 0, 0, 1, None)
    ]
    estimations = [
        SegmentEstimation(segment_index=0, bands=[], estimated=4),
        SegmentEstimation(segment_index=1, bands=[], estimated=0),
    ]
    return PhotoAnalysis(
        width=640,
        height=480,
        segments=segments,
        detections=detections,
        estimations=estimations,
        provider="CPUExecutionProvider",
        timings_ms={"detect": 12.5},
        warnings=[],
    )


async def test_one_session_with_counts_per_segment(serve: ServeFactory) -> None:
    served = await serve()
    store = client_of(served).sessions
    await store.create("d1", 2, photo_names_metadata(["bench-a.jpg", "bench-b.jpg"]))
    await store.transition("d1", "processing")
    await store.update_photo("d1", PhotoProgress(index=0, state="done", detected=5, estimated=4))
    await store.update_photo(
        "d1", PhotoProgress(index=1, state="failed", error_code="invalid", reason="not a photo")
    )
    photos = [
        PhotoResult(
            index=0,
            status="done",
            analysis=analysis(),
            detected=5,
            estimated=4,
            width=640,
            height=480,
            warnings=["little colour"],
            timings_ms={"detect": 12.5},
        ),
        PhotoResult(index=1, status="failed", error_code="invalid", reason="not a photo"),
    ]
    result = SessionResult(
        session_id="d1",
        status="warning",
        photos=photos,
        total_detected=5,
        total_estimated=4,
        avg_confidence=0.8,
        created_at=utcnow(),
        completed_at=utcnow(),
    )
    await store.set_result("d1", result)
    await store.transition("d1", "warning", reason="1 of 2 photos failed")
    doc = (await served.http.get("/api/sessions/d1")).json()
    assert doc["session"]["status"] == "warning"
    assert doc["totals"] == {
        "detected": 5,
        "estimated": 4,
        "plants": 9,
        "avg_confidence": 0.8,
        "photos_done": 1,
        "photos_failed": 1,
    }
    first, second = doc["photos"]
    assert first["name"] == "bench-a.jpg" and second["name"] == "bench-b.jpg"
    assert [(s["index"], s["detected"], s["estimated"]) for s in first["segments"]] == [
        (0, 3, 4),
        (1, 1, 0),
    ]
    assert first["unassigned_detected"] == 1
    assert first["warnings"] == ["little colour"] and first["timings_ms"] == {"detect": 12.5}
    assert (second["state"], second["error_code"], second["reason"]) == (
        "failed",
        "invalid",
        "not a photo",
    )
    assert [e["type"] for e in doc["events"]][:2] == ["session.created", "session.status"]
    assert doc["summary"]["detected"] == 5
    full = (await served.http.get("/api/sessions/d1/result")).json()
    assert full["total_estimated"] == 4
    missing = await served.http.get("/api/sessions/nope")
    assert missing.status_code == 404 and "no session" in missing.json()["error"]


async def test_upload_checks_like_submit(serve: ServeFactory) -> None:
    served = await serve()
    http = served.http
    headers = await served.action_headers()
    files = [
        ("photos", ("Bench <A-12>.jpg", jpeg(), "image/jpeg")),
        ("photos", ("second.jpg", jpeg(64, 48), "application/octet-stream")),
    ]
    created = await http.post(
        "/api/sessions",
        files=files,
        headers=headers,
        data={"metadata": json.dumps({"bench": "A-12"})},
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["url"] == f"sessions/{body['session_id']}"
    record = await client_of(served).status(body["session_id"])
    assert record.photo_count == 2 and record.status == "pending"
    assert record.metadata["bench"] == "A-12" and record.metadata["source"] == "dashboard"
    assert photo_names(record.metadata) == ["Bench <A-12>.jpg", "second.jpg"]
    not_photo = [("photos", ("notes.jpg", b"hello, not a photo", "image/jpeg"))]
    refused = await http.post("/api/sessions", files=not_photo, headers=headers)
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("notes.jpg: ")
    assert "not a JPEG, PNG or WebP" in refused.json()["error"]
    none = await http.post("/api/sessions", data={"metadata": "{}"}, headers=headers)
    assert none.status_code == 400 and "no photos" in none.json()["error"]
    bad_meta = await http.post(
        "/api/sessions", files=files, headers=headers, data={"metadata": "[1, 2]"}
    )
    assert bad_meta.status_code == 400 and "JSON object" in bad_meta.json()["error"]
    assert (await http.post("/api/sessions", files=files)).status_code == 403


async def test_dead_letters_retry_discard_and_the_log(serve: ServeFactory) -> None:
    served = await serve()
    client = client_of(served)
    letters = DeadLetters(client.redis, served.settings)
    for i, (code, replayable) in enumerate(
        [("NoSuchBucket", True), ("NoSuchBucket", True), ("invalid_image", False)]
    ):
        await letters.add(
            DeadLetter(
                id=f"dl{i}",
                function="aggregate" if replayable else "infer",
                queue=client.queues.io,
                job_id=f"job{i}",
                kwargs={"payload": {"n": i}},
                error_code=code,
                reason=f"reason {i}",
                attempts=1 + i,
                replayable=replayable,
            )
        )
    http = served.http
    headers = await served.action_headers()
    doc = (await http.get("/api/dead-letters")).json()
    assert [d["id"] for d in doc["letters"]] == ["dl2", "dl1", "dl0"]  # newest first
    assert "kwargs" not in doc["letters"][0]
    assert doc["causes"][0] | {"last_failed_at": None} == {
        "function": "aggregate",
        "error_code": "NoSuchBucket",
        "count": 2,
        "tries": 3,
        "replayable": 2,
        "last_failed_at": None,
        "example": "reason 1",
    }
    retried = await http.post("/api/dead-letters/dl0/retry", headers=headers)
    assert retried.status_code == 200 and retried.json()["replayed"][0].startswith("job0:replay:")
    gone = await http.post("/api/dead-letters/dl0/retry", headers=headers)
    assert gone.status_code == 404
    stuck = await http.post("/api/dead-letters/dl2/retry", headers=headers)
    assert stuck.status_code == 409 and "cannot be replayed" in stuck.json()["error"]
    discarded = await http.post("/api/dead-letters/dl1/discard", headers=headers)
    assert discarded.json() == {"discarded": "dl1"}
    everything = await http.post("/api/dead-letters/retry-all", headers=headers)
    assert everything.json()["not_replayable"] == 1 and everything.json()["replayed"] == []
    after = (await http.get("/api/dead-letters")).json()
    assert [d["id"] for d in after["letters"]] == ["dl2"]
    assert [a["action"] for a in after["actions"]] == ["retry-all", "discard", "retry"]
    assert after["actions"][2]["details"]["letter"] == "dl0"


async def test_system_queues_workers_breaker_redis(serve: ServeFactory) -> None:
    served = await serve()
    client = client_of(served)
    redis: Any = client.redis
    now_ms = int(time.time() * 1000)
    queue = client.queues.gpu
    await redis.zadd(
        queue, {"w1": now_ms - 5, "w2": now_ms - 5, "r1": now_ms - 9, "later": now_ms + 600_000}
    )
    await redis.set(f"{in_progress_key_prefix}r1", b"1", ex=60)
    try:
        doc = (await served.http.get("/api/system")).json()
    finally:
        await redis.delete(f"{in_progress_key_prefix}r1")
    gpu = next(q for q in doc["queues"] if q["role"] == "gpu")
    assert (gpu["jobs"], gpu["waiting"], gpu["scheduled"], gpu["running"]) == (4, 2, 1, 1)
    assert [q["role"] for q in doc["queues"]] == ["io", "cpu", "gpu"]
    assert doc["workers"] == [] and doc["breaker"]["state"] == "closed"
    assert doc["redis"]["policy"] == "noeviction" and doc["redis"]["policy_ok"]
    assert doc["dead_letters"] == 0


async def test_reports_do_not_leak_into_the_session_page(serve: ServeFactory) -> None:
    """Only a session's own record is read: a join's child reports stay internal."""
    served = await serve()
    store: SessionStore = client_of(served).sessions
    await store.create("c1", 1)
    assert ChildReport(ok=True).ok
    doc = (await served.http.get("/api/sessions/c1")).json()
    assert doc["photos"][0]["state"] == "pending" and doc["results"] is None


async def test_uploads_over_the_size_limit_are_refused(serve: ServeFactory) -> None:
    served = await serve(max_upload_bytes=1024)  # a request may carry 50 x 1 KiB + 1 MiB
    photos = [
        ("photos", (f"{i}.jpg", jpeg(400, 300) + bytes(300_000), "image/jpeg")) for i in range(5)
    ]
    resp = await served.http.post(
        "/api/sessions", files=photos, headers=await served.action_headers()
    )
    assert resp.status_code == 413 and "over the limit" in resp.json()["error"]
    small = [("photos", ("big.jpg", jpeg(400, 300) + bytes(5000), "image/jpeg"))]
    one = await served.http.post(
        "/api/sessions", files=small, headers=await served.action_headers()
    )
    assert one.status_code == 400 and one.json()["error"].startswith("big.jpg: ")
