"""Load: 20 client tasks submit 10 photos each at once through real io/cpu/gpu workers into
LocalStack; every session ends truthfully, every artifact lands, nothing leaks in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from tests.conftest import REDIS_URL
from tests.faults.conftest import (
    ClusterFactory,
    Expected,
    FaultReport,
    PayloadScanner,
    RedisServer,
    bucket_objects,
    check_sessions,
    permanent_kinds,
    prefix_ttls,
    scaled,
    small_photo,
    unexpected_permanent,
)

pytestmark = pytest.mark.faults

SESSIONS = 20


def live_worker_key(key: str) -> bool:
    """Keys live workers keep refreshing: plantpipe heartbeats and arq health checks."""
    return ":worker:" in key or key.endswith(":health-check")


PHOTOS = 10


async def test_200_photos_from_20_concurrent_clients(
    make_fault_cluster: ClusterFactory, localstack: str, fault_report: FaultReport
) -> None:
    cluster = make_fault_cluster()
    settings = cluster.settings
    prefix = settings.key_prefix
    await cluster.start("io", "cpu", "gpu")
    inputs = [[small_photo(s * PHOTOS + i) for i in range(PHOTOS)] for s in range(SESSIONS)]
    redis = Redis.from_url(REDIS_URL)
    sids: set[str] = set()
    try:
        async with cluster.client() as client:
            scanner = PayloadScanner(redis, sids)

            async def one(photos: list[tuple[bytes, int]]) -> Expected:
                sid = await client.submit([data for data, _ in photos])
                sids.add(sid)
                await client.wait(sid, timeout=scaled(240), artifacts=True)
                return Expected(sid, [n for _, n in photos])

            started = time.monotonic()
            async with scanner.running():
                expected = await asyncio.gather(*(one(p) for p in inputs))
                await scanner.scan_once()
            wall = time.monotonic() - started

            objects = await bucket_objects(localstack, settings.s3_bucket)
            check = await check_sessions(client, expected, objects=objects, report=fault_report)
            letters = await client.failed()
            # nothing in the bucket that no session accounts for
            accounted = {
                a.key for e in expected for a in (await client.status(e.session_id)).artifacts
            }
            strays = sorted(set(objects) - accounted)

            blobs = [k async for k in redis.scan_iter(match=f"{prefix}:blob:*", count=1000)]
            ttls = await prefix_ttls(redis, prefix)
    finally:
        await redis.aclose()

    fault_report.load_sessions = SESSIONS
    fault_report.load_photos = SESSIONS * PHOTOS
    fault_report.load_wall_s = wall
    for _ in expected:
        fault_report.count_session(PHOTOS)
    fault_report.job_payloads_checked += len(scanner.seen)
    fault_report.pickled_payloads += len(scanner.pickled) + len(scanner.undecodable)
    fault_report.permanent_keys |= permanent_kinds(prefix, ttls)

    assert check.problems() == []
    assert check.artifacts == SESSIONS * (4 * PHOTOS + 1)
    assert strays == []
    assert letters == []
    assert blobs == [], f"{len(blobs)} blob keys left after every artifact was uploaded"
    assert unexpected_permanent(ttls) == []
    assert scanner.pickled == [] and scanner.undecodable == []
    assert len(scanner.seen) > 0


async def test_every_key_expires_and_memory_returns_to_its_starting_level(
    make_fault_cluster: ClusterFactory,
    private_redis: Callable[..., RedisServer],
    localstack: str,
    fault_report: FaultReport,
) -> None:
    """PLANTPIPE_SESSION_TTL_S small: once sessions end and their TTL passes, the prefix holds
    only its permanent keys and Redis' used_memory is back where it started."""
    ttl = 20
    server = private_redis("ttl")
    # records must outlive the deadline and the deadline every job timeout (settings refuse
    # otherwise); sessions here must end within ttl - 1 s anyway (below)
    cluster = make_fault_cluster(
        redis_url=server.url(0),
        session_ttl_s=ttl,
        session_deadline_s=ttl - 1,
        gpu_job_timeout_s=5,
        cpu_job_timeout_s=5,
        io_job_timeout_s=5,
    )
    prefix = cluster.settings.key_prefix
    await cluster.start("io", "cpu", "gpu")
    redis = server.client()
    peak = 0

    async def memory() -> int:
        """Bytes of data (used_memory less client buffers, script cache and other overhead).
        Redis computes it unsigned: a sample taken while overhead briefly exceeds
        used_memory wraps around; such samples are discarded."""
        while True:
            info = await redis.info("memory")
            dataset, used = int(info["used_memory_dataset"]), int(info["used_memory"])
            if dataset <= used:
                return dataset
            await asyncio.sleep(0.01)

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, await memory())
            await asyncio.sleep(0.05)

    try:
        await asyncio.sleep(0.5)
        baseline_keys = await prefix_ttls(redis, prefix)  # worker heartbeats only
        baseline = await memory()
        sampler = asyncio.create_task(sample())
        async with cluster.client() as client:
            photos = [[small_photo(7000 + s * 2 + i) for i in range(2)] for s in range(6)]
            started = time.monotonic()
            sids = [await client.submit([d for d, _ in p]) for p in photos]
            big = await client.upload(
                "loose/object.bin", os.urandom(6 * 1024 * 1024), content_type="x/y"
            )
            # every session must end before its record expires (ttl after creation)
            left_s = ttl - 1 - (time.monotonic() - started)
            records = await asyncio.gather(
                *(client.wait(s, timeout=left_s, artifacts=True) for s in sids)
            )
            await big.wait(timeout=5)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        finished = time.monotonic()
        keys_at_end = await prefix_ttls(redis, prefix)
        deadline = finished + ttl + 15
        while True:
            left = await prefix_ttls(redis, prefix)
            transient = {k: t for k, t in left.items() if t >= 0 and not live_worker_key(k)}
            if not transient or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        after = await memory()
        # arq keeps each job's result (with its arguments) for keep_result = 60 s: not ours
        arq_left = [k async for k in redis.scan_iter(match="arq:*", count=1000)]
        arq_bytes = sum([int(await redis.memory_usage(k) or 0) for k in arq_left])
    finally:
        await redis.aclose()

    for _ in sids:
        fault_report.count_session(2)
    fault_report.permanent_keys |= permanent_kinds(prefix, left)
    grown = after - arq_bytes - baseline
    fault_report.notes.append(
        f"TTL {ttl} s: {len(keys_at_end)} prefix keys at the end of the run, "
        f"{len(left) - len(baseline_keys)} more than at the start after expiry; "
        f"used_memory_dataset "
        f"{baseline / 1024:.0f} KiB → peak {peak / 1024:.0f} KiB → {after / 1024:.0f} KiB, of "
        f"which {arq_bytes / 1024:.0f} KiB in {len(arq_left)} arq:* keys (arq keeps job results "
        "60 s)"
    )
    assert all(r.status == "completed" and r.artifacts_ready for r in records)
    assert transient == {}, f"still there {ttl + 15} s after the run: {sorted(transient)}"
    assert unexpected_permanent(left) == []
    # a leak would scale with the load (a 4 MiB blob, ~100 KiB per session); what stays is
    # allocator and keyspace bookkeeping of a few hundred KiB
    assert peak - baseline > 6 * 1024 * 1024
    assert grown < 1024 * 1024, (
        f"used_memory_dataset {baseline} → {after} (peak {peak}, arq {arq_bytes})"
    )
