"""plantpipe's arq worker (pipeline.runtime.worker.ResilientWorker) against real Redis: batched
claims run every job exactly once, even with two workers racing for one queue; ``enqueue``
wakes an idle worker instead of leaving the job to the next poll; the wake list stays tiny."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from arq import func
from arq.connections import ArqRedis, create_pool

from pipeline.runtime.connection import redis_settings
from pipeline.runtime.enqueue import enqueue, wake_key
from pipeline.runtime.serialization import deserialize, serialize
from pipeline.runtime.worker import ResilientWorker
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration

runs: Counter[str] = Counter()
started: dict[str, float] = {}


async def eventually(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)


async def stop(worker: ResilientWorker, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with contextlib.suppress(asyncio.CancelledError):  # close() cancels jobs still running
        await worker.close()


async def record(ctx: dict[str, Any], tag: str) -> None:
    runs[tag] += 1
    started[tag] = time.monotonic()
    await asyncio.sleep(0.002)


@pytest.fixture
async def pool(make_settings: SettingsFactory) -> AsyncIterator[tuple[ArqRedis, Any]]:
    settings = make_settings()
    redis = await create_pool(
        redis_settings(settings), job_serializer=serialize, job_deserializer=deserialize
    )
    yield redis, settings
    await redis.aclose()


async def running(
    settings: Any, queue: str, poll_delay: float, max_jobs: int
) -> tuple[ResilientWorker, asyncio.Task[None]]:
    worker = ResilientWorker(
        functions=[func(record, name="record")],
        redis_settings=redis_settings(settings),
        queue_name=queue,
        poll_delay=poll_delay,
        max_jobs=max_jobs,
        keep_result=0,
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=False,
    )
    return worker, asyncio.create_task(worker.async_run())


async def test_two_workers_run_every_job_exactly_once(pool: tuple[ArqRedis, Any]) -> None:
    redis, settings = pool
    queue = f"{settings.key_prefix}:queue:race"
    tags = [f"race-{uuid.uuid4().hex[:8]}-{i}" for i in range(300)]
    workers = [await running(settings, queue, 0.01, 20) for _ in range(2)]
    try:
        await asyncio.gather(*(enqueue(redis, "record", t, _queue_name=queue) for t in tags))
        await eventually(lambda: sum(runs[t] for t in tags) >= len(tags), 60)
        await asyncio.sleep(0.3)  # a double run would show up now
    finally:
        for worker, task in workers:
            await stop(worker, task)
    assert {t: runs[t] for t in tags if runs[t] != 1} == {}
    assert all(w.job_counter == 0 for w, _ in workers), "a claim leaked a job slot"
    assert await redis.zcard(queue) == 0


async def test_enqueue_wakes_an_idle_worker_before_its_next_poll(
    pool: tuple[ArqRedis, Any],
) -> None:
    redis, settings = pool
    queue = f"{settings.key_prefix}:queue:wake"
    worker, task = await running(settings, queue, 3.0, 5)  # polls only every 3 s
    try:
        await asyncio.sleep(0.5)  # idle, inside its wait
        woken, polled = f"woken-{uuid.uuid4().hex}", f"polled-{uuid.uuid4().hex}"
        t0 = time.monotonic()
        await enqueue(redis, "record", woken, _queue_name=queue)
        await eventually(lambda: woken in started, 10)
        woken_after = started.get(woken, float("inf")) - t0
        # The token list holds at most one token and expires.
        for _ in range(5):
            await enqueue(redis, "record", f"more-{uuid.uuid4().hex}", _queue_name=queue)
        assert await redis.llen(wake_key(queue)) <= 1
        assert (
            0 < await redis.pttl(wake_key(queue)) <= 60_000
            or await redis.exists(wake_key(queue)) == 0
        )
        await asyncio.sleep(0.5)
        # A job enqueued without the wake-up waits for the next poll.
        t1 = time.monotonic()
        await redis.enqueue_job("record", polled, _queue_name=queue)
        await eventually(lambda: polled in started, 10)
        polled_after = started.get(polled, float("inf")) - t1
    finally:
        await stop(worker, task)
    assert woken_after < 1.0, f"woken job started {woken_after:.2f} s after enqueue"
    assert 1.0 < polled_after < 10, f"plain enqueue_job started after {polled_after:.2f} s"
