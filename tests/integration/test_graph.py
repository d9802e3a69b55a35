"""Fan-out/fan-in and sessions against real Redis (and a real arq worker for callbacks)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from arq import func
from redis.asyncio import Redis

from pipeline.client import PipelineClient
from pipeline.runtime.joins import Callback, JoinStore
from pipeline.runtime.roles import common_worker_options
from pipeline.schemas import ChildReport
from pipeline.state.sessions import InvalidTransition, SessionStore
from tests.conftest import SettingsFactory, in_process_worker

pytestmark = pytest.mark.integration


def callback_for(queue: str, join_id: str) -> Callback:
    # arq job ids are global to the Redis db: make them unique per test via the queue name
    return Callback(
        function="collect",
        queue=queue,
        job_id=f"{queue}:collect:{join_id}",
        arguments={"join": join_id},
    )


@pytest.mark.parametrize("children", [1, 5, 100])
async def test_join_counts_each_child_once_and_fires_callback_once(
    make_settings: SettingsFactory, redis: Redis, children: int
) -> None:
    settings = make_settings()
    queue = f"{settings.key_prefix}:queue:test"
    calls: list[dict[str, Any]] = []

    async def collect(ctx: dict[str, Any], join: str) -> int:
        reports = await JoinStore(ctx["redis"], settings).results(join)
        calls.append(reports)
        await JoinStore(ctx["redis"], settings).complete(join)
        return len(reports)

    async def started(ctx: dict[str, Any]) -> None:
        ctx["started"] = True

    options = {
        **common_worker_options(settings),
        "functions": [func(collect, name="collect")],
        "queue_name": queue,
        "on_startup": started,
    }
    async with PipelineClient(settings) as client:
        joins = JoinStore(client.redis, settings)
        await joins.create("j1", children, callback_for(queue, "j1"))
        reports = [
            joins.report("j1", f"c{i}", ChildReport(ok=i % 7 != 3, result={"i": i}))
            for i in range(children)
        ]
        # every child reports twice (a re-run after a crash), concurrently
        outcomes = await asyncio.gather(
            *reports,
            *[
                joins.report("j1", f"c{i}", ChildReport(ok=True, result={"dup": i}))
                for i in range(children)
            ],
        )
        assert sum(o.counted for o in outcomes) == children
        async with in_process_worker(options, settings):
            for _ in range(200):
                if calls:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
        assert len(calls) == 1
        assert len(calls[0]) == children
        # the first report of each child won; the duplicates were ignored
        assert all("dup" not in r.result for r in calls[0].values())
        assert await joins.is_complete("j1")


async def test_join_with_no_children_fires_at_once(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    queue = f"{settings.key_prefix}:queue:test"
    async with PipelineClient(settings) as client:
        await JoinStore(client.redis, settings).create("empty", 0, callback_for(queue, "empty"))
        assert await redis.exists(f"arq:job:{queue}:collect:empty")


async def test_lost_callback_is_redriven(make_settings: SettingsFactory, redis: Redis) -> None:
    settings = make_settings(join_stale_s=1)  # the smallest the settings allow
    queue = f"{settings.key_prefix}:queue:test"
    async with PipelineClient(settings) as client:
        joins = JoinStore(client.redis, settings)
        await joins.create("lost", 2, callback_for(queue, "lost"))
        await joins.report("lost", "a", ChildReport(ok=True))
        await joins.report("lost", "b", ChildReport(ok=False, error_code="x", reason="y"))
        # the process died right after the last report: the callback job never reached arq
        await redis.delete(f"arq:job:{queue}:collect:lost")
        await redis.zrem(queue, f"{queue}:collect:lost")
        assert await joins.redrive(now=time.time()) == []  # not stale yet: left alone
        assert await joins.redrive(now=time.time() + 2) == ["lost"]
        assert await redis.exists(f"arq:job:{queue}:collect:lost")
        # still queued: re-driving again enqueues nothing new
        assert await joins.redrive(now=time.time() + 3) == []


async def test_session_state_machine_refuses_invalid_moves(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    sessions = SessionStore(redis, settings)
    await sessions.create("s1", 2)
    assert await sessions.transition("s1", "processing")
    assert not await sessions.transition("s1", "processing")  # no change
    assert await sessions.transition("s1", "warning", reason="1 of 2 photos failed")
    with pytest.raises(InvalidTransition):
        await sessions.transition("s1", "completed", strict=True)
    assert not await sessions.transition("s1", "processing")
    record = await sessions.get("s1")
    assert record is not None
    assert (record.status, record.reason) == ("warning", "1 of 2 photos failed")
    events = await redis.xrange(f"{settings.key_prefix}:session:s1:events")
    kinds = [e[1][b"type"].decode() for e in events]
    assert kinds == ["session.created", "session.status", "session.status"]
    with pytest.raises(LookupError):
        await sessions.transition("nope", "failed")


async def test_wait_returns_within_50ms_of_the_terminal_event(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    sessions = SessionStore(redis, settings)
    await sessions.create("s2", 1)
    async with PipelineClient(settings) as client:
        lags: list[float] = []
        for round_ in range(5):
            sid = f"s2-{round_}"
            await sessions.create(sid, 1)
            waiter = asyncio.create_task(client.wait(sid, timeout=10))
            await asyncio.sleep(0.3)  # the waiter is blocked in XREAD by now
            assert not waiter.done()
            t0 = time.perf_counter()
            await sessions.transition(sid, "completed")
            record = await waiter
            lags.append(time.perf_counter() - t0)
            assert record.status == "completed"
        assert max(lags) < 0.05, lags
