"""Section 2: the unblocked callback — sessions with S3 at 2 s per request.

* **plantpipe**: real io, cpu and gpu worker processes (fixture models), small photos. Times:
  submit → terminal status (``client.wait``) and submit → every artifact uploaded
  (``client.wait(artifacts=True)``); plus the ``aggregate`` step's own wall time (returned by
  the job) — it enqueues the uploads and returns.
* **original behaviour, uploads inline in the aggregate step**: :func:`original_callback`
  reproduces the original's ``ml_aggregation_callback``: create a boto3 client, render each
  photo's visualization and thumbnails, ``put_object`` each artifact one after the other to
  the same 2 s stub, then set the status. Its wall time is measured on the same analyses as
  the plantpipe session of the same repetition. The original's session turns terminal only
  after that step, so its submit → terminal is derived as (submit → every photo analysed, as
  measured in the plantpipe run: the last ``render_photo`` job's start) + that wall time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, Final

import boto3  # type: ignore[import-untyped]
import redis as sync_redis
from arq.jobs import Job
from botocore.config import Config

from bench.cluster import fixture_models, jpeg, start_cluster, submit_and_wait
from bench.common import Stat
from bench.harness import Harness, SectionOutput, settings_for
from pipeline.client import PipelineClient
from pipeline.runtime.serialization import deserialize
from pipeline.schemas import SessionResult
from pipeline.settings import Settings
from pipeline.state.ids import aggregate_job_id, render_job_id
from pipeline.vision.decode import decode_image
from pipeline.vision.outputs import AVIF_CONTENT_TYPE, JPEG_CONTENT_TYPE
from pipeline.vision.render import make_thumbnail
from workers.rendering import render_outputs

LATENCY_MS: Final = 2000.0


def small_photos(count: int) -> list[bytes]:
    """640×480 nursery photos (two trays) as in the slow-S3 end-to-end test, as JPEG."""
    from pipeline.testing.onnx_fixtures import make_nursery_photo

    trays = ((30, 40, 300, 440), (340, 40, 610, 440))
    return [jpeg(make_nursery_photo(640, 480, trays, seed=i, skip=0.2).rgb) for i in range(count)]


def original_callback(
    result: SessionResult,
    photos: list[bytes],
    settings: Settings,
    status_key: str,
) -> tuple[float, int]:
    """The original's aggregation callback: render, put every artifact synchronously, then set
    the status. Returns (wall seconds, artifacts uploaded)."""
    t0 = time.perf_counter()
    s3: Any = boto3.client(  # the original created its client inside the callback
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )
    sid = result.session_id
    uploads: list[tuple[str, bytes, str]] = []
    for photo in result.photos:
        if photo.analysis is None:
            continue
        data = photos[photo.index]
        rendered = render_outputs(data, photo.analysis, settings)
        avif, thumb_processed = rendered["processed"], rendered["thumbnail_processed"]
        thumb_original = make_thumbnail(
            decode_image(data).rgb,
            longest_side=settings.thumbnail_px,
            quality=settings.thumbnail_quality,
        )
        base = f"original/{sid}/{photo.index}"
        uploads += [
            (f"{base}/processed.avif", avif, AVIF_CONTENT_TYPE),
            (f"{base}/thumbnail_original.jpg", thumb_original, JPEG_CONTENT_TYPE),
            (f"{base}/thumbnail_processed.jpg", thumb_processed, JPEG_CONTENT_TYPE),
        ]
    uploads.append(
        (f"original/{sid}/results.json", result.model_dump_json().encode(), "application/json")
    )
    for key, body, content_type in uploads:
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body, ContentType=content_type)
    client = sync_redis.Redis.from_url(settings.redis_url)
    try:
        client.hset(status_key, mapping={"status": result.status})
        client.expire(status_key, 600)
    finally:
        client.close()
    return time.perf_counter() - t0, len(uploads)


async def _job_info(client: PipelineClient, job_id: str) -> Any:
    job = Job(job_id, client.redis, _queue_name=client.queues.cpu, _deserializer=deserialize)
    info = await job.result_info()
    if info is None:
        raise LookupError(f"no arq result for {job_id}")
    return info


async def run(h: Harness) -> SectionOutput:
    reps = 5
    count = 1 if h.quick else 2
    photos = small_photos(count)
    models = fixture_models(h)
    await h.stub_latency(0)
    prefix = h.prefix("callback")
    cluster = await start_cluster(h, prefix, models.env)
    settings = settings_for(h, prefix)
    client = PipelineClient(settings)
    await client.connect()
    terminal: list[float] = []
    landed: list[float] = []
    aggregate_s: list[float] = []
    analysed: list[float] = []
    original_s: list[float] = []
    artifacts = uploads = 0
    try:
        sid, _t, _a = await submit_and_wait(client, photos, timeout=180)  # warm-up at 0 ms
        h.track(sid)
        await h.stub_latency(LATENCY_MS)
        for rep in range(reps):
            submitted = datetime.now().astimezone()
            sid, t_terminal, t_landed = await submit_and_wait(client, photos, timeout=180)
            h.track(sid)
            terminal.append(t_terminal)
            landed.append(t_landed)
            agg = await _job_info(client, aggregate_job_id(sid))
            aggregate_s.append(float(agg.result["elapsed_ms"]) / 1000)
            renders = [await _job_info(client, render_job_id(sid, i)) for i in range(count)]
            last_render = max(r.start_time for r in renders)
            analysed.append((last_render - submitted).total_seconds())
            record = await client.status(sid)
            artifacts = record.artifacts_uploaded
            result = await client.result(sid)
            wall, uploads = await asyncio.to_thread(
                original_callback, result, photos, settings, f"{prefix}:original:{rep}"
            )
            original_s.append(wall)
    finally:
        await client.close()
        h.stop(*cluster.procs)
        await h.stub_latency(0)
        await h.stub_reset(store=True)

    original_terminal = [a + w for a, w in zip(analysed, original_s, strict=True)]
    t, lnd, agg_stat = Stat.of(terminal), Stat.of(landed), Stat.of(aggregate_s)
    orig, orig_t = Stat.of(original_s), Stat.of(original_terminal)
    lines = [
        f"{reps} repetitions; sessions of {count} photo(s) of 640×480 (fixture nursery photos, "
        f"fixture models); every S3 request takes {LATENCY_MS / 1000:.0f} s; seconds.",
        "",
        "| | submit → terminal status | submit → every artifact in S3 | callback (aggregate "
        "step) wall time |",
        "|---|---|---|---|",
        f"| plantpipe (uploads handed to the io role) | {t.fmt(2)} | {lnd.fmt(2)} | "
        f"{agg_stat.fmt(3)} |",
        f"| original: uploads inline in the callback | {orig_t.fmt(2)} (derived) | "
        f"{orig_t.fmt(2)} (derived) | {orig.fmt(2)} |",
        "",
        f"plantpipe uploads {artifacts} artifacts per session (originals, thumbnails, "
        "visualizations, results.json), all through the io worker, 50 at a time, so they take "
        f"about one S3 latency after they are produced; its callback only writes the result, "
        "sets the status and enqueues the upload of results.json (the visualizations were "
        "rendered and handed to io by each photo's `render_photo` job before the join "
        f"completed). The original's callback rendered and then put {uploads} artifacts one "
        "after another (visualization + 2 thumbnails per photo, and results.json) — "
        f"{uploads} × 2 s — before the status could change. Derived = submit → every photo "
        f"analysed in the plantpipe run ({Stat.of(analysed).fmt(2)} s) + the measured inline "
        "callback.",
    ]
    headlines = [
        f"slow S3 (2 s/request): plantpipe session terminal after {t.median:.1f} s, all "
        f"artifacts in S3 after {lnd.median:.1f} s, callback step {agg_stat.median * 1000:.0f} "
        f"ms; the original's inline-upload callback took {orig.median:.1f} s"
    ]
    return "\n".join(lines), headlines
