"""The callback never waits for S3: with 2 s per S3 request, sessions end before uploads."""

from __future__ import annotations

import time
from typing import Any

import pytest
from arq.jobs import Job

from pipeline.runtime.serialization import deserialize
from pipeline.testing.onnx_fixtures import encode_png, make_nursery_photo
from pipeline.testing.s3stub import S3Stub

pytestmark = pytest.mark.e2e


async def test_session_completes_before_its_uploads_and_they_all_land(
    make_cluster: Any, cleanup_redis: list[str]
) -> None:
    stub = S3Stub()
    endpoint = await stub.start()
    try:
        cluster = make_cluster(s3_endpoint_url=endpoint, io_job_timeout_s=30)
        cleanup_redis.append(cluster.settings.key_prefix)
        await cluster.start("io", "cpu", "gpu")
        stub.latency_s = 2.0  # every S3 request now takes 2 s
        photo = make_nursery_photo(640, 480, ((30, 40, 300, 440), (340, 40, 610, 440)))
        async with cluster.client() as client:
            submitted = time.monotonic()
            sid = await client.submit([encode_png(photo.rgb)] * 2)
            record = await client.wait(sid, timeout=60)
            terminal_after = time.monotonic() - submitted
            assert record.status == "completed", record.reason
            pending = {a.key.rsplit("/", 1)[-1] for a in record.artifacts if a.state == "pending"}
            # the callback's own artifacts are still on their way when the session is done
            assert "results.json" in pending
            job = Job(
                f"aggregate:{sid}",
                client.redis,
                _queue_name=client.queues.cpu,
                _deserializer=deserialize,
            )
            info = await job.result(timeout=5)
            assert info["elapsed_ms"] < 2000, info  # less than one S3 request: it never waited
            done = await client.wait(sid, timeout=120, artifacts=True)
            all_landed_after = time.monotonic() - submitted
        assert done.artifacts_ready
        assert done.artifacts_uploaded == 9  # 2 × 4 photo artifacts + results.json
        assert all_landed_after > terminal_after + 1.5
        keys = {k for b, k in stub.objects if b == cluster.settings.s3_bucket}
        assert f"{sid}/results.json" in keys
        assert f"{sid}/1/processed.avif" in keys
    finally:
        await stub.stop()


async def test_failed_uploads_settle_the_wait_and_replay_after_the_fix(
    make_cluster: Any, cleanup_redis: list[str]
) -> None:
    stub = S3Stub()
    endpoint = await stub.start()
    try:
        cluster = make_cluster(s3_endpoint_url=endpoint)
        cleanup_redis.append(cluster.settings.key_prefix)
        await cluster.start("io", "cpu", "gpu")
        stub.fail_all(403, "AccessDenied", ops={"PutObject"})
        photo = make_nursery_photo(640, 480, ((30, 40, 300, 440), (340, 40, 610, 440)))
        async with cluster.client() as client:
            sid = await client.submit([encode_png(photo.rgb)])
            record = await client.wait(sid, timeout=60, artifacts=True)
            assert record.status == "completed"  # the analysis succeeded; S3 refused
            assert not record.artifacts_ready
            assert record.artifacts_failed == 5
            letters = await client.failed()
            assert {d.error_code for d in letters} == {"AccessDenied"}
            assert all(d.attempts == 1 for d in letters)  # permanent: no retries
            stub.clear_faults()  # the operator fixes the bucket policy
            assert len(await client.retry_failed()) == 5
            record = await client.wait(sid, timeout=60, artifacts=True)
        assert record.artifacts_ready
        assert record.artifacts_failed == 0
        assert record.artifacts_uploaded == 5
    finally:
        await stub.stop()
