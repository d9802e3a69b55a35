"""S3 faults with real workers: a 30 s outage of LocalStack mid-load (cut behind a TCP proxy,
so what it stores survives: breaker opens, nothing dropped, everything lands after), and
permanent errors (403 AccessDenied, 404 NoSuchBucket, from the in-process S3 stub
pipeline.testing.s3stub) that go to dead letters and are replayed after the fix."""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlparse

import pytest
from redis.asyncio import Redis

from pipeline.client import PipelineClient
from pipeline.errors import UploadFailed
from pipeline.storage.breaker import RedisCircuitBreaker
from pipeline.testing.s3stub import S3Stub
from pipeline.testing.tcp_proxy import TcpProxy
from tests.conftest import REDIS_URL, SettingsFactory, in_process_worker
from tests.faults.conftest import (
    ClusterFactory,
    Expected,
    FaultReport,
    bucket_objects,
    check_sessions,
    free_port,
    scaled,
    small_photo,
)
from workers import io as io_worker

pytestmark = pytest.mark.faults

OUTAGE_S = 30.0


def stub_objects(stub: S3Stub, bucket: str) -> dict[str, int]:
    return {key: obj.size for (b, key), obj in stub.objects.items() if b == bucket}


async def test_s3_outage_mid_load_opens_the_breaker_and_drops_nothing(
    make_fault_cluster: ClusterFactory, fault_report: FaultReport, localstack: str
) -> None:
    target = urlparse(localstack)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 4566)
    endpoint = await proxy.start()
    cluster = make_fault_cluster(s3_endpoint_url=endpoint)
    settings = cluster.settings
    redis = Redis.from_url(REDIS_URL)
    breaker = RedisCircuitBreaker(redis, settings)
    states: set[str] = set()
    try:
        await cluster.start("io", "cpu", "gpu")
        inputs = [[small_photo(2000 + s * 5 + i) for i in range(5)] for s in range(8)]
        async with cluster.client() as client:
            expected: list[Expected] = []
            for photos in inputs[:4]:
                sid = await client.submit([d for d, _ in photos])
                expected.append(Expected(sid, [n for _, n in photos]))
            await asyncio.sleep(0.5)
            await proxy.stop()  # S3 goes away mid-load
            down_at = time.monotonic()
            for photos in inputs[4:]:  # and load keeps coming while it is away
                sid = await client.submit([d for d, _ in photos])
                expected.append(Expected(sid, [n for _, n in photos]))
            letters_during: list[str] = []
            while time.monotonic() - down_at < OUTAGE_S:
                states.add(await breaker.state())
                letters_during += [f"{d.error_code}: {d.reason}" for d in await client.failed()]
                await asyncio.sleep(0.25)
            processed = [(await client.status(e.session_id)).status for e in expected]
            await proxy.start()  # same port, same data
            outage = time.monotonic() - down_at
            back_at = time.monotonic()
            for exp in expected:
                await client.wait(exp.session_id, timeout=scaled(120), artifacts=True)
            landed_after = time.monotonic() - back_at
            objects = await bucket_objects(localstack, settings.s3_bucket)
            check = await check_sessions(client, expected, objects=objects, report=fault_report)
            letters = await client.failed()
            final_state = await breaker.state()
    finally:
        await redis.aclose()
        cluster.stop_all()
        await proxy.stop()

    fault_report.s3_outage_s += outage
    for exp in expected:
        fault_report.count_session(len(exp.counts))
    fault_report.notes.append(
        f"S3 (LocalStack) outage: {outage:.1f} s; breaker states seen {sorted(states)}; "
        f"sessions during the outage {sorted(set(processed))}; every upload landed "
        f"{landed_after:.1f} s after S3 came back"
    )
    assert "open" in states, f"breaker never opened during a {outage:.0f} s outage"
    assert letters_during == [], "uploads were dropped to dead letters during the outage"
    assert check.problems() == []
    assert check.artifacts == 8 * (4 * 5 + 1)
    assert letters == []
    assert final_state == "closed"


async def test_s3_outage_uploads_resume_promptly_once_s3_is_back(
    make_fault_cluster: ClusterFactory, fault_report: FaultReport
) -> None:
    """Regression, fixed in d6d6aec (pipeline/storage/breaker.py `_ALLOW`, workers/io.py
    `upload`). The bug: after an outage,
    the first caller gets the half-open trial and every other upload is told to wait
    ``trial_until - now`` = s3_read_timeout_s + s3_connect_timeout_s (35 s by default), and
    is deferred by that much even though the trial succeeds in milliseconds.
    ``PLANTPIPE_BREAKER_DEFER_S`` ("re-check delay for deferred uploads") is never used.
    Every deferred upload should re-check after at most breaker_defer_s."""
    stub = S3Stub(port=free_port())
    endpoint = await stub.start()
    cluster = make_fault_cluster(s3_endpoint_url=endpoint, breaker_defer_s=1.0)
    settings = cluster.settings
    try:
        await cluster.start("io")
        async with cluster.client() as client:
            await stub.stop()
            handles = [
                await client.upload(f"outage/{i}", b"x" * 100, content_type="text/plain")
                for i in range(100)
            ]
            redis = client.redis
            breaker = RedisCircuitBreaker(redis, settings)
            deadline = time.monotonic() + 20
            while await breaker.state() != "open":
                assert time.monotonic() < deadline, "breaker never opened"
                await asyncio.sleep(0.1)
            await asyncio.sleep(3)
            stub.latency_s = 0.1  # a real S3 answers in tens of ms, not instantly
            await stub.start()
            back = time.monotonic()
            bound = settings.breaker_reset_s + settings.breaker_defer_s + 5
            with contextlib.suppress(TimeoutError):
                await asyncio.gather(
                    *(h.wait(timeout=bound) for h in handles), return_exceptions=True
                )
            took = time.monotonic() - back
            states = [(await h.state()).state for h in handles]
    finally:
        cluster.stop_all()
        await stub.stop()
    fault_report.s3_outage_s += 3
    late = states.count("pending")
    assert late == 0, (
        f"{late} of {len(handles)} uploads still deferred {took:.1f} s after S3 came back; "
        f"expected all within breaker_reset_s + breaker_defer_s + 5 = {bound:.0f} s"
    )


@pytest.mark.parametrize(("status", "code"), [(403, "AccessDenied"), (404, "NoSuchBucket")])
async def test_permanent_s3_errors_are_dead_lettered_and_replayed(
    make_fault_cluster: ClusterFactory, fault_report: FaultReport, status: int, code: str
) -> None:
    stub = S3Stub(port=free_port())
    endpoint = await stub.start()
    cluster = make_fault_cluster(s3_endpoint_url=endpoint)
    settings = cluster.settings
    redis = Redis.from_url(REDIS_URL)
    breaker = RedisCircuitBreaker(redis, settings)
    try:
        await cluster.start("io", "cpu", "gpu")
        stub.fail_all(status, code, ops="PutObject")
        photos = [small_photo(3000 + i) for i in range(2)]
        async with cluster.client() as client:
            sid = await client.submit([d for d, _ in photos])
            record = await client.wait(sid, timeout=scaled(60), artifacts=True)
            letters = await client.failed()
            state_while_denied = await breaker.state()
            stub.clear_faults()  # the operator fixes the policy / creates the bucket
            replayed = await client.retry_failed()
            record_after = await client.wait(sid, timeout=scaled(60), artifacts=True)
            check = await check_sessions(
                client,
                [Expected(sid, [n for _, n in photos])],
                objects=stub_objects(stub, settings.s3_bucket),
                report=fault_report,
            )
            letters_after = await client.failed()
    finally:
        await redis.aclose()
        cluster.stop_all()
        await stub.stop()

    fault_report.count_session(2)
    fault_report.s3_denied_replayed += len(replayed)
    artifacts = 4 * 2 + 1
    assert record.status == "completed"  # the analysis is fine; only S3 refused
    assert record.artifacts_failed == artifacts and not record.artifacts_ready
    assert len(letters) == artifacts
    assert {(d.function, d.error_code, d.attempts) for d in letters} == {("upload", code, 1)}
    assert all(f"{status} {code}" in d.reason for d in letters)
    assert state_while_denied == "closed"  # a 4xx says nothing about S3's health
    assert len(replayed) == artifacts
    assert record_after.artifacts_ready and record_after.artifacts_failed == 0
    assert check.problems() == []
    assert letters_after == []


async def test_an_upload_that_outlives_its_job_timeout_is_retried_or_dead_lettered(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """Regression, fixed in d6d6aec (workers/io.py ``upload`` and every role; cause in arq).
    The bug: when a job runs past its
    arq ``timeout`` (io_job_timeout_s, gpu_job_timeout_s, cpu_job_timeout_s), arq cancels it
    and records a plain failure: no ``Retry`` and ``handle_failure`` never runs. The upload
    stays ``pending`` forever, no dead letter is written, ``UploadHandle.wait()`` and
    ``client.wait(artifacts=True)`` never return (for infer_photo/render_photo the photo never
    reports and the session waits for the watchdog deadline). A slow S3 (queueing on the
    50-request semaphore counts in the job's time) is enough. Fix: enforce the time budget
    inside the job (``asyncio.timeout(job_timeout - margin)`` around the work, raising a
    transient ``TimeoutError`` that ``handle_failure`` retries then dead-letters), or wrap the
    job functions so arq's TimeoutError is routed through ``handle_failure``."""
    stub = S3Stub(latency_s=2.5)  # this one request is slower than the 1 s job timeout
    endpoint = await stub.start()
    try:
        settings = make_settings(s3_endpoint_url=endpoint, io_job_timeout_s=1)
        async with (
            in_process_worker(io_worker.worker_options(settings), settings),
            PipelineClient(settings) as client,
        ):
            handle = await client.upload("slow/object.bin", b"data", content_type="x/y")
            await asyncio.sleep(1.5)
            stub.latency_s = 0.0  # S3 is fast again: a retry would succeed now
            outcome = "pending"
            with contextlib.suppress(TimeoutError):
                try:
                    outcome = (await handle.wait(timeout=4)).state
                except UploadFailed as exc:
                    outcome = f"failed: {exc.code}"
            letters = await client.failed()
    finally:
        await stub.stop()
    assert outcome == "uploaded" or (outcome.startswith("failed") and letters), (
        f"upload left {outcome!r} with {len(letters)} dead letters after arq's job timeout"
    )


async def test_client_side_upload_errors_fail_at_once_without_tripping_the_breaker(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """Regression, fixed in d6d6aec (pipeline/queue.py ``classify``; pipeline/client.py
    ``PipelineClient.upload``; workers/io.py ``upload``). The bug:
    ``client.upload(metadata=...)`` did not validate metadata.
    Non-ASCII values make botocore raise ``ParamValidationError`` and CR/LF make aiohttp
    refuse the header (``HTTPClientError``); ``classify`` calls every ``botocore.*`` exception
    transient, so the io worker retries them and records each as an S3 failure in the shared
    breaker. A few such uploads open the breaker for every upload of every session; once it
    is open the poison upload is deferred (new job id, job_try back to 1) and re-fails on
    each half-open trial, so it is never dead-lettered and keeps re-opening the breaker.
    Fix: validate metadata in ``client.upload`` (ASCII, no control characters, S3's 2 KiB
    limit) like ``clean_metadata``; classify ``ParamValidationError`` and an
    ``HTTPClientError`` wrapping ``ValueError`` as permanent; record breaker failures only
    for connection errors, timeouts and 5xx."""
    stub = S3Stub()
    endpoint = await stub.start()
    poison = [{"caption": "café"}, {"note": "a\r\nx-amz-acl: public-read"}]
    refused: list[str] = []
    outcomes: list[str] = []
    try:
        settings = make_settings(s3_endpoint_url=endpoint, breaker_fail_max=3)
        breaker = RedisCircuitBreaker(redis, settings)
        async with (
            in_process_worker(io_worker.worker_options(settings), settings),
            PipelineClient(settings) as client,
        ):
            handles = []
            for meta in poison:
                try:
                    handles.append(
                        await client.upload("meta/x.bin", b"x", content_type="x/y", metadata=meta)
                    )
                except ValueError as exc:
                    refused.append(str(exc))
            waited = await asyncio.gather(
                *(h.wait(timeout=6) for h in handles), return_exceptions=True
            )
            for item in waited:
                if isinstance(item, UploadFailed):
                    outcomes.append(f"failed: {item.code}")
                elif isinstance(item, TimeoutError):
                    outcomes.append("still pending after 6 s")
                elif isinstance(item, BaseException):
                    raise item
                else:
                    outcomes.append(item.state)
            letters = await client.failed()
            failures, state = await breaker.failures(), await breaker.state()
            # and a good upload right after must not be held back
            good = await client.upload("meta/good.bin", b"ok", content_type="x/y")
            good_state = "pending"
            with contextlib.suppress(TimeoutError):
                good_state = (await good.wait(timeout=3)).state
    finally:
        await stub.stop()
    assert len(refused) + len(outcomes) == len(poison)
    assert all(o.startswith("failed") for o in outcomes), outcomes
    assert all(d.attempts == 1 for d in letters), [(d.error_code, d.attempts) for d in letters]
    assert (failures, state) == (0, "closed"), "client-side errors counted as S3 failures"
    assert good_state == "uploaded"
