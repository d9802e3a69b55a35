"""Redis at ``maxmemory`` (``noeviction``) under load: new sessions are refused clearly and
write nothing, the workers ride it out, and once memory frees everything in flight ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from pipeline.client import PipelineClient
from pipeline.runtime.memory import RedisFull
from tests.faults.conftest import (
    ClusterFactory,
    Expected,
    FaultReport,
    RedisServer,
    bucket_objects,
    check_sessions,
    dump_logs,
    scaled,
    settle_sessions,
    small_photo,
)

pytestmark = pytest.mark.faults

SESSIONS = 6
PHOTOS = 3
FULL_S = 20.0


async def session_ids(redis: Redis) -> set[str]:
    """The ids of the sessions Redis holds a key for. Ids, not keys: a session in flight
    gains its ``:events`` stream lazily, so its key count may grow while Redis is full."""
    ids: set[str] = set()
    async for key in redis.scan_iter(match="*:session:*"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        ids.add(name.split(":session:", 1)[1].split(":", 1)[0])
    return ids


async def test_redis_at_maxmemory_refuses_new_work_and_loses_none(
    make_fault_cluster: ClusterFactory,
    private_redis: Callable[..., RedisServer],
    localstack: str,
    fault_report: FaultReport,
    tmp_path: Path,
) -> None:
    server = private_redis("full", maxmemory="48mb")
    cluster = make_fault_cluster(redis_url=server.url(0))
    await cluster.start("io", "cpu", "gpu")
    inputs = [[small_photo(8000 + s * PHOTOS + i) for i in range(PHOTOS)] for s in range(SESSIONS)]
    expected: list[Expected] = []
    filler = server.client()
    async with PipelineClient(cluster.settings) as client:
        for photos in inputs:
            sid = await client.submit([d for d, _ in photos])
            expected.append(Expected(sid, [n for _, n in photos]))
        await asyncio.sleep(0.3)  # work in flight in every role
        # Fill Redis to the brim: from now on it refuses every write (OOM).
        chunk, filled = b"x" * (256 * 1024), 0
        while True:
            try:
                await filler.set(f"filler:{filled}", chunk)
            except OutOfMemoryError:
                break
            filled += 1
        full_at = time.monotonic()
        sessions_before = await session_ids(filler)
        with pytest.raises(RedisFull) as refused:
            await client.submit([small_photo(8999)[0]])
        refused_in_s = time.monotonic() - full_at
        sessions_after = await session_ids(filler)
        await asyncio.sleep(FULL_S)  # the workers meet a full Redis
        exited = {
            role: w.proc.returncode
            for role, w in cluster.workers.items()
            if w.proc.poll() is not None
        }
        await filler.delete(*(f"filler:{i}" for i in range(filled)))
        workers = list(cluster.workers.values())
        stuck = await settle_sessions(client, expected, workers, scaled(120))
        if stuck or exited:
            stuck.append(dump_logs(tmp_path, workers))
        objects = await bucket_objects(localstack, cluster.settings.s3_bucket)
        check = await check_sessions(client, expected, objects=objects, report=fault_report)
        letters = await client.failed()
    await filler.aclose()
    for exp in expected:
        fault_report.count_session(len(exp.counts))
    fault_report.notes.append(
        f"Redis at maxmemory (48 MB, noeviction) for {FULL_S:.0f} s under load: a new "
        f"session refused in {refused_in_s * 1000:.0f} ms with nothing written; workers that "
        f"exited: {exited or 'none'}; {len(expected)} sessions in flight settled once memory "
        f"freed: {not stuck and not check.problems()}"
    )
    assert "PLANTPIPE_REDIS_SUBMIT_MAX_USED" in str(refused.value)
    assert sessions_after <= sessions_before, (
        f"a refused submit wrote a session: {sorted(sessions_after - sessions_before)}"
    )
    assert exited == {}, f"workers exited at maxmemory: {exited}"
    assert stuck == [], "sessions not settled once memory freed:\n" + "\n".join(stuck)
    assert check.problems() == []
    assert [(d.function, d.error_code) for d in letters] == []
