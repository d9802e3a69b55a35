"""Sessions end to end with real io/cpu/gpu worker processes, Redis and LocalStack."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import aioboto3
import pytest
from botocore.config import Config
from PIL import Image
from redis.asyncio import Redis

from pipeline.runtime.joins import JoinStore
from pipeline.schemas import InferJob
from pipeline.state.ids import child_id, infer_job_id, session_join_id
from pipeline.testing.onnx_fixtures import encode_png, make_nursery_photo
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.e2e

SMALL_TRAYS = ((30, 40, 300, 440), (340, 40, 610, 440))


def small_photo(seed: int = 0, skip: float = 0.0) -> tuple[bytes, int]:
    photo = make_nursery_photo(640, 480, SMALL_TRAYS, skip=skip, seed=seed)
    return encode_png(photo.rgb), len(photo.squares)


def s3(endpoint: str) -> Any:
    return aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


async def read_object(endpoint: str, bucket: str, key: str) -> tuple[bytes, str]:
    async with s3(endpoint) as client:
        resp = await client.get_object(Bucket=bucket, Key=key)
        return await resp["Body"].read(), resp["ContentType"]


@pytest.mark.parametrize("photos", [1, 5])
async def test_session_completes_with_every_artifact_in_s3(
    make_cluster: Any, cleanup_redis: list[str], localstack: str, photos: int
) -> None:
    cluster = make_cluster()
    cleanup_redis.append(cluster.settings.key_prefix)
    await cluster.start("io", "cpu", "gpu")
    inputs = [small_photo(seed=i, skip=0.2) for i in range(photos)]
    async with cluster.client() as client:
        sid = await client.submit([d for d, _ in inputs], {"bench": "A-12"})
        record = await client.wait(sid, timeout=120, artifacts=True)
        result = await client.result(sid)
    assert record.status == "completed", record.reason
    assert record.artifacts_ready and record.artifacts_failed == 0
    assert [p.detected for p in result.photos] == [n for _, n in inputs]
    assert result.total_detected == sum(n for _, n in inputs)
    assert result.metadata == {"bench": "A-12"}
    assert all(len(p.analysis.segments) == 2 for p in result.photos if p.analysis)
    assert result.avg_confidence is not None and result.avg_confidence > 0.9
    bucket = cluster.settings.s3_bucket
    base = sid if photos == 1 else f"{sid}/0"
    avif, ctype = await read_object(localstack, bucket, f"{base}/processed.avif")
    assert ctype == "image/avif"
    assert Image.open(io.BytesIO(avif)).format == "AVIF"
    thumb, ctype = await read_object(localstack, bucket, f"{base}/thumbnail_processed.jpg")
    assert ctype == "image/jpeg" and max(Image.open(io.BytesIO(thumb)).size) == 300
    original, ctype = await read_object(localstack, bucket, f"{base}/original.png")
    assert original == inputs[0][0] and ctype == "image/png"
    body, _ = await read_object(localstack, bucket, f"{sid}/results.json")
    doc = json.loads(body)
    assert doc["status"] == "completed"
    assert doc["total_detected"] == result.total_detected
    assert {"total_estimated", "avg_confidence"} <= doc.keys()
    keys = {a.key for a in record.artifacts}
    assert len(keys) == 4 * photos + 1


async def test_hundred_children_and_failures_end_truthfully(
    make_cluster: Any, cleanup_redis: list[str]
) -> None:
    cluster = make_cluster()
    cleanup_redis.append(cluster.settings.key_prefix)
    await cluster.start("io", "cpu", "gpu")
    good, _ = small_photo()
    truncated = good[: len(good) // 3]  # refused at submit; the workers' own refusal here
    async with cluster.client() as client:
        many = await client.submit([good] * 100)
        mixed = await client.submit([good, truncated, good], decode_check=False)
        broken = await client.submit([truncated, truncated], decode_check=False)
        records = [await client.wait(s, timeout=300) for s in (many, mixed, broken)]
        many_result = await client.result(many)
    assert [r.status for r in records] == ["completed", "warning", "failed"]
    assert len(many_result.photos) == 100
    assert all(p.status == "done" for p in many_result.photos)
    mixed_record = records[1]
    assert mixed_record.reason is not None and "1 of 3 photos failed" in mixed_record.reason
    assert [p.state for p in mixed_record.photos] == ["done", "failed", "done"]
    assert mixed_record.photos[1].error_code
    assert "2 of 2 photos failed" in (records[2].reason or "")


async def test_sigkilled_gpu_worker_job_is_rerun_and_counted_once(
    make_cluster: Any, cleanup_redis: list[str]
) -> None:
    cluster = make_cluster(gpu_job_timeout_s=15)  # in-progress key expires 25 s after start
    cleanup_redis.append(cluster.settings.key_prefix)
    await cluster.start("io", "cpu", "gpu")
    big = make_nursery_photo(3200, 2400, ((100, 100, 1550, 2300), (1650, 100, 3100, 2300)))
    redis = Redis.from_url(REDIS_URL)
    async with cluster.client() as client:
        sid = await client.submit([encode_png(big.rgb)])
        in_progress = f"arq:in-progress:{infer_job_id(sid, 0)}"
        for _ in range(600):
            if await redis.exists(in_progress):
                break
            await asyncio.sleep(0.01)
        cluster.kill("gpu")  # SIGKILL mid-job
        killed_at = time.monotonic()
        await cluster.start("gpu")
        record = await client.wait(sid, timeout=120)
        rerun_after = time.monotonic() - killed_at
        result = await client.result(sid)
        reports = await JoinStore(client.redis, cluster.settings).results(session_join_id(sid))
    await redis.aclose()
    assert record.status == "completed", record.reason
    assert list(reports) == [child_id(0)]
    assert result.photos[0].detected == len(big.squares)
    assert rerun_after < 60


async def test_rerun_child_after_completion_is_not_counted_again(
    make_cluster: Any, cleanup_redis: list[str]
) -> None:
    cluster = make_cluster()
    cleanup_redis.append(cluster.settings.key_prefix)
    await cluster.start("io", "cpu", "gpu")
    data, n = small_photo()
    async with cluster.client() as client:
        sid = await client.submit([data, data])
        await client.wait(sid, timeout=60)
        before = await client.result(sid)
        # replay child 0 as if arq re-ran it after a crash that followed its report
        blobs = await client.sessions.originals(sid)
        job = InferJob(session_id=sid, index=0, photo_count=2, blob=blobs[0], mime="image/png")
        await client.redis.enqueue_job(
            "infer_photo",
            payload=job.model_dump(mode="json"),
            _job_id=f"{infer_job_id(sid, 0)}:again",
            _queue_name=client.queues.gpu,
        )
        await asyncio.sleep(3)
        after = await client.result(sid)
        reports = await JoinStore(client.redis, cluster.settings).results(session_join_id(sid))
    assert len(reports) == 2
    assert after == before
    assert after.total_detected == 2 * n


async def test_deadline_fails_the_session_with_a_reason(
    make_cluster: Any, cleanup_redis: list[str]
) -> None:
    cluster = make_cluster()
    cleanup_redis.append(cluster.settings.key_prefix)
    await cluster.start("cpu")  # no gpu worker: nothing will ever analyse the photo
    data, _ = small_photo()
    async with cluster.client() as client:
        sid = await client.submit([data], deadline_s=2)
        record = await client.wait(sid, timeout=30)
    assert record.status == "failed"
    assert record.reason is not None and "deadline exceeded" in record.reason
    assert "0 of 1 photos reported" in record.reason


async def test_lost_callback_is_redriven_by_the_watchdog(
    make_cluster: Any, cleanup_redis: list[str]
) -> None:
    cluster = make_cluster()
    cleanup_redis.append(cluster.settings.key_prefix)
    await cluster.start("io", "gpu")  # no cpu worker yet
    data, n = small_photo()
    async with cluster.client() as client:
        sid = await client.submit([data])
        joins = JoinStore(client.redis, cluster.settings)
        for _ in range(300):
            progress = await joins.progress(session_join_id(sid))
            if progress is not None and progress.complete:
                break
            await asyncio.sleep(0.1)
        # the callback is lost (as if Redis took the report but the enqueue never happened)
        await client.redis.delete(f"arq:job:aggregate:{sid}")
        await client.redis.zrem(cluster.settings.key_prefix + ":queue:cpu", f"aggregate:{sid}")
        await cluster.start("cpu")
        record = await client.wait(sid, timeout=60)
        result = await client.result(sid)
    assert record.status == "completed"
    assert result.total_detected == n
