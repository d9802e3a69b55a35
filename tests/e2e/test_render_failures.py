"""A visualization that cannot be made never loses the count (real io/cpu/gpu workers).

The photo's analysis is the product; ``render_photo`` only draws it. When drawing fails —
its input is gone, or it runs past its budget — the photo is still ``done`` with its counts
in ``results.json``, and carries a warning that says what failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.client import PipelineClient
from pipeline.schemas import SessionResult
from tests.conftest import REDIS_URL
from tests.e2e.test_sessions import read_object, small_photo

pytestmark = pytest.mark.e2e


async def wait_until_analysed(client: PipelineClient, sid: str, timeout: float = 60) -> int:
    """Wait until inference recorded the photo's count (before any render ran)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        record = await client.status(sid)
        photo = record.photos[0]
        uploaded = {a.key.rsplit("/", 1)[-1]: a.state for a in record.artifacts}
        if photo.detected is not None and uploaded.get("original.png") == "uploaded":
            return photo.detected
        await asyncio.sleep(0.1)
    raise AssertionError(f"photo not analysed within {timeout} s: {record}")


async def assert_counted_with_warning(
    localstack: str, bucket: str, sid: str, result: SessionResult, detected: int, code: str
) -> None:
    assert result.status == "warning", result.reason
    photo = result.photos[0]
    assert photo.status == "done"
    assert photo.detected == detected > 0
    assert photo.analysis is not None and photo.analysis.total_detected == detected
    assert len(photo.warnings) == 1
    warning = photo.warnings[0]
    assert warning.startswith(f"visualization failed ({code}): ")
    assert len(warning.split(": ", 1)[1]) > 20  # a reason, never empty
    assert "processed" not in photo.keys  # no key for a picture that was never made
    assert result.total_detected == detected
    body, _ = await read_object(localstack, bucket, f"{sid}/results.json")
    doc = json.loads(body)
    assert doc["total_detected"] == detected
    assert doc["photos"][0]["status"] == "done"
    assert doc["photos"][0]["analysis"] is not None


async def test_render_that_raises_keeps_the_count(
    make_cluster: Any, cleanup_redis: list[str], localstack: str
) -> None:
    cluster = make_cluster()
    cleanup_redis.append(cluster.settings.key_prefix)
    await cluster.start("io", "gpu")  # no cpu worker yet: the render waits in its queue
    data, _ = small_photo(seed=3, skip=0.2)
    async with cluster.client() as client:
        sid = await client.submit([data])
        detected = await wait_until_analysed(client, sid)
        # The render's input is gone (as if it expired): drawing raises BlobMissing.
        redis = Redis.from_url(REDIS_URL)
        prefix = cluster.settings.key_prefix
        assert await redis.delete(f"{prefix}:blob:{hashlib.sha256(data).hexdigest()}") == 1
        await redis.aclose()
        await cluster.start("cpu")
        await client.wait(sid, timeout=60, artifacts=True)
        result = await client.result(sid)
    await assert_counted_with_warning(
        localstack, cluster.settings.s3_bucket, sid, result, detected, "blob_missing"
    )
    assert "gone" in result.photos[0].warnings[0]


async def test_render_that_times_out_keeps_the_count(
    make_cluster: Any, cleanup_redis: list[str], localstack: str
) -> None:
    # AVIF speed 0 at full size takes many seconds even for 640×480; the budget is 1.5 s.
    cluster = make_cluster(cpu_job_timeout_s=2, avif_speed=0, visualization_max_px=None)
    cleanup_redis.append(cluster.settings.key_prefix)
    await cluster.start("io", "cpu", "gpu")
    data, _ = small_photo(seed=4, skip=0.2)
    async with cluster.client() as client:
        sid = await client.submit([data])
        await client.wait(sid, timeout=60, artifacts=True)
        result = await client.result(sid)
        record = await client.status(sid)
    detected = record.photos[0].detected
    assert detected is not None
    await assert_counted_with_warning(
        localstack, cluster.settings.s3_bucket, sid, result, detected, "render_timeout"
    )
    assert "budget of 1.5 s" in result.photos[0].warnings[0]
    assert record.photos[0].state == "done"
