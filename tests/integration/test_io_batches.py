"""Several uploads per io job (``upload_batch``): the job's bookkeeping is shared, each
upload's fate is its own — against the instrumented S3 endpoint and a real worker process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from pipeline import PipelineClient, UploadFailed, UploadItem
from pipeline.client import UploadHandle
from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.serialization import deserialize
from pipeline.state.blobs import BlobTooLarge
from pipeline.testing.s3stub import S3Stub
from tests.conftest import SettingsFactory, WorkerProcess, in_process_worker, settings_env
from workers import io as io_worker

pytestmark = pytest.mark.integration


def items(prefix: str, n: int, size: int = 2048) -> list[UploadItem]:
    return [
        UploadItem(key=f"{prefix}/{i}", data=bytes([i % 256]) * size, content_type="x/y")
        for i in range(n)
    ]


async def test_a_batch_with_one_forbidden_object_lands_the_others(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """One 403 in a batch of 12: the other 11 land once, that one is dead-lettered with S3's
    code (tried once: a permanent error is not retried) and lands when replayed."""
    stub = S3Stub()
    endpoint = await stub.start()
    try:
        settings = make_settings(s3_endpoint_url=endpoint, retry_delays_s=[0.05, 0.05, 0.05])
        async with (
            in_process_worker(io_worker.worker_options(settings), settings),
            PipelineClient(settings) as client,
        ):
            stub.fail_next(1, 403, "AccessDenied", ops=["PutObject"])
            handles = await client.upload_many(items("b403", 12))
            outcomes = await asyncio.gather(
                *(h.wait(timeout=30) for h in handles), return_exceptions=True
            )
            failed = [h for h, o in zip(handles, outcomes, strict=True) if isinstance(o, Exception)]
            assert len(failed) == 1, outcomes
            assert isinstance(outcomes[handles.index(failed[0])], UploadFailed)
            assert "AccessDenied" in str(outcomes[handles.index(failed[0])])
            landed = {k for _, k in stub.objects if k.startswith("b403/")}
            assert landed == {h.key for h in handles} - {failed[0].key}
            assert stub.stats.by_op["PutObject"] == 12  # no sibling sent twice
            letters = await client.failed()
            assert [(d.function, d.error_code, d.attempts, d.replayable) for d in letters] == [
                ("upload", "AccessDenied", 1, True)
            ]
            assert letters[0].kwargs["payload"]["key"] == failed[0].key
            await client.retry_failed()
            assert (await failed[0].wait(timeout=30)).state == "uploaded"
            assert {k for _, k in stub.objects if k.startswith("b403/")} == {h.key for h in handles}
    finally:
        await stub.stop()


async def test_transient_failures_in_a_batch_retry_only_those_uploads(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    stub = S3Stub()
    endpoint = await stub.start()
    try:
        settings = make_settings(
            s3_endpoint_url=endpoint, retry_delays_s=[0.05, 0.05, 0.05], breaker_fail_max=100
        )
        async with (
            in_process_worker(io_worker.worker_options(settings), settings),
            PipelineClient(settings) as client,
        ):
            stub.fail_next(3, 503, "SlowDown", ops=["PutObject"])
            handles = await client.upload_many(items("b503", 20))
            records = await asyncio.gather(*(h.wait(timeout=30) for h in handles))
            assert {r.state for r in records} == {"uploaded"}
            assert await client.failed() == []
            assert stub.stats.by_op["PutObject"] == 20 + 3  # the three, once more each
    finally:
        await stub.stop()


@pytest.mark.parametrize("batched", [True, False], ids=["upload_many", "upload"])
async def test_a_long_outage_defers_uploads_and_dead_letters_none(
    make_settings: SettingsFactory, redis: Redis, batched: bool
) -> None:
    """S3 answers 503 to every PUT for longer than the tries of any one upload would last
    (a half-open trial every 0.2 s, four tries of 0.05 s): failures the breaker counts as the
    outage use up no upload's tries, so nothing is dead-lettered and all land once S3 is back.
    (Before, the upload first in line at each trial ran out of tries.)"""
    stub = S3Stub()
    endpoint = await stub.start()
    try:
        settings = make_settings(
            s3_endpoint_url=endpoint,
            retry_delays_s=[0.05, 0.05, 0.05],
            breaker_fail_max=2,
            breaker_reset_s=0.2,
            breaker_defer_s=0.2,
        )
        async with (
            in_process_worker(io_worker.worker_options(settings), settings),
            PipelineClient(settings) as client,
        ):
            stub.fail_all(503, "ServiceUnavailable", ops=["PutObject"])
            data = items("outage" + "b" * batched, 6)
            if batched:
                handles = await client.upload_many(data)
            else:
                handles = [await client.upload(i.key, i.data, content_type="x/y") for i in data]
            # The outage lasts until S3 has refused twice the tries of every upload in all,
            # however slow this machine is: before the fix, the upload first in line ran out.
            deadline = time.monotonic() + 60
            while stub.stats.by_op["PutObject"] < 6 + 4 * 2:
                assert await client.failed() == []
                assert time.monotonic() < deadline, "the breaker let no half-open trial through"
                await asyncio.sleep(0.1)
            assert await client.failed() == []
            stub.clear_faults()
            records = await asyncio.gather(*(h.wait(timeout=30) for h in handles))
            assert {r.state for r in records} == {"uploaded"}
            assert await client.failed() == []
    finally:
        await stub.stop()


async def test_a_batch_rerun_after_sigkill_uploads_nothing_twice_and_loses_nothing(
    make_settings: SettingsFactory,
    redis: Redis,
    worker_processes: Callable[[str, dict[str, str]], WorkerProcess],
) -> None:
    """The io worker is SIGKILLed while a batch of 40 is half uploaded; arq re-runs the batch
    on a new worker: every object lands, and each artifact records one upload."""
    stub = S3Stub(latency_s=0.4)
    endpoint = await stub.start()
    try:
        settings = make_settings(s3_endpoint_url=endpoint, io_job_timeout_s=4, io_concurrency=8)
        env = settings_env(settings)
        worker = worker_processes("io", env)
        async with PipelineClient(settings) as client:
            handles = await client.upload_many(items("bkill", 40))
            deadline = time.monotonic() + 60
            while len([k for _, k in stub.objects if k.startswith("bkill/")]) < 8:
                assert time.monotonic() < deadline, worker.output()[-2000:]
                await asyncio.sleep(0.02)
            worker.kill()  # SIGKILL mid-batch: some uploaded and recorded, some in flight
            partial = len([k for _, k in stub.objects if k.startswith("bkill/")])
            assert partial < 40
            worker_processes("io", env)
            records = await asyncio.gather(*(h.wait(timeout=90) for h in handles))
            assert {r.state for r in records} == {"uploaded"}
            assert await client.failed() == []
            for handle in handles:
                stream = client.keys.artifact_events(handle.artifact_id)
                entries = await client.redis.xrange(stream)
                kinds = [fields[b"type"].decode() for _, fields in entries]
                assert kinds.count("artifact.uploaded") == 1, (handle.key, kinds)
            queued = await redis.zcard(QueueNames.from_settings(settings).io)
            assert queued == 0
        assert {k for _, k in stub.objects if k.startswith("bkill/")} == {h.key for h in handles}
    finally:
        await stub.stop()


async def test_the_io_memory_budget_bounds_the_payloads_in_flight(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """PLANTPIPE_IO_MEMORY_MB=1: 300 KiB payloads go at most three at a time (bytes are held
    from their read until S3 answers), though 50 S3 slots are free; a 2 MiB object, larger than
    the whole budget, goes alone. All land."""
    stub = S3Stub(latency_s=0.05)
    endpoint = await stub.start()
    try:
        settings = make_settings(s3_endpoint_url=endpoint, io_memory_mb=1)
        async with (
            in_process_worker(io_worker.worker_options(settings), settings),
            PipelineClient(settings) as client,
        ):
            handles = await client.upload_many(items("mem", 20, size=300 * 1024))
            await asyncio.gather(*(h.wait(timeout=60) for h in handles))
            assert 0 < stub.stats.max_in_flight <= 3  # an upper bound: how busy the box is
            # decides how much of the room is used at once
            big = await client.upload_many([*items("membig", 1, size=2 << 20), *items("mems", 4)])
            records = await asyncio.gather(*(h.wait(timeout=20) for h in big))
            assert {r.state for r in records} == {"uploaded"}
            assert await client.failed() == []
    finally:
        await stub.stop()


async def test_large_objects_go_to_io_in_jobs_of_about_io_batch_max_bytes(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """``upload_many`` of ten 300 KiB objects with a 1 MiB job size: four jobs (3, 3, 3 and a
    lone one) queued in order, each as soon as it is stored; all land once a worker runs."""
    stub = S3Stub()
    endpoint = await stub.start()
    try:
        settings = make_settings(s3_endpoint_url=endpoint, io_batch_max_bytes=1024 * 1024)
        async with PipelineClient(settings) as client:
            handles = await client.upload_many(items("bbytes", 10, size=300 * 1024))
            keys = await queued_io_jobs(redis, QueueNames.from_settings(settings).io)
            assert sorted(len(k) for k in keys) == [1, 3, 3, 3]
            assert sorted(key for chunk in keys for key in chunk) == sorted(h.key for h in handles)
            async with in_process_worker(io_worker.worker_options(settings), settings):
                records = await asyncio.gather(*(h.wait(timeout=30) for h in handles))
        assert {r.state for r in records} == {"uploaded"}
        assert stub.stats.by_op["PutObject"] == 10
    finally:
        await stub.stop()


async def queued_io_jobs(redis: Redis, queue: str) -> list[list[str]]:
    """The keys each queued io job carries (one for an ``upload`` job)."""
    jobs = [
        deserialize(await redis.get(f"arq:job:{job_id.decode()}") or b"")
        for job_id in await redis.zrange(queue, 0, -1)
    ]
    return [
        [u["key"] for u in job["k"]["payload"]["uploads"]]
        if job["f"] == "upload_batch"
        else [job["k"]["payload"]["key"]]
        for job in jobs
    ]


async def test_uploads_asked_for_at_once_share_an_io_job(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """20 ``client.upload`` calls from 20 tasks at once: one io job for all of them; a lone
    call: a job of its own; an object too large fails alone, before anything is stored."""
    stub = S3Stub()
    endpoint = await stub.start()
    try:
        settings = make_settings(
            s3_endpoint_url=endpoint, max_blob_bytes=100_000, max_upload_bytes=100_000
        )
        queue = QueueNames.from_settings(settings).io
        async with PipelineClient(settings) as client:
            calls = [
                client.upload(f"together/{i}", bytes([i]) * 1000, content_type="x/y")
                for i in range(20)
            ]
            calls.append(client.upload("together/huge", b"h" * 200_000, content_type="x/y"))
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert isinstance(outcomes[-1], BlobTooLarge)
            handles = [o for o in outcomes if isinstance(o, UploadHandle)]
            assert len(handles) == 20
            assert [sorted(job) for job in await queued_io_jobs(redis, queue)] == [
                sorted(h.key for h in handles)
            ]
            lone = await client.upload("alone/1", b"one", content_type="x/y")
            assert ["alone/1"] in await queued_io_jobs(redis, queue)
            async with in_process_worker(io_worker.worker_options(settings), settings):
                records = await asyncio.gather(*(h.wait(timeout=30) for h in [*handles, lone]))
        assert {r.state for r in records} == {"uploaded"}
        assert stub.stats.by_op["PutObject"] == 21
        assert stub.objects[(settings.s3_bucket, "together/7")].body == bytes([7]) * 1000
    finally:
        await stub.stop()
