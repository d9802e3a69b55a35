"""``ResilientWorker``'s poll loop against a private ``redis-server`` (``tests.redis_server``: its
own port, started and stopped here; never the shared test Redis).

What only errors from Redis ride out (a hook's own ``TimeoutError`` stops the worker as it
stops arq's; a Redis restart is ridden out; an outage past ``redis_outage_limit_s`` ends it),
and the loop paths arq's own test suite (``scripts/arq_suite.sh``) never reaches: waiting
with every slot busy, waking up for an ``enqueue``, a failed claim giving its slots back, and
a claim with no room. Each test asserts what happens; its deadlines are generous, and where
"promptly" is the point, the poll delay is far longer than the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import arq.worker
import pytest
from arq import func
from arq.connections import ArqRedis, create_pool
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import WatchError

from pipeline.runtime import worker as worker_module
from pipeline.runtime.connection import redis_settings
from pipeline.runtime.context import SETTINGS
from pipeline.runtime.enqueue import enqueue
from pipeline.runtime.worker import ResilientWorker, raised_by_redis
from pipeline.settings import Settings
from tests.redis_server import RedisServer

DEADLINE_S = 30.0  # for what must happen: generous on a busy machine
SLOW_POLL_S = 300.0  # a poll delay no test waits out: what starts, starts without polling


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def pool(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    redis = await create_pool(redis_settings(settings_for(redis_server)))
    yield redis
    with contextlib.suppress(Exception):
        await redis.aclose()


def settings_for(server: RedisServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": server.url(),
        "redis_ride_out_s": 0.5,  # a command gives up quickly: the poll loop's turn
        "redis_conn_timeout_s": 1.0,
        **overrides,
    }
    return Settings(**values)


class Jobs:
    """Jobs the test controls: ``hold`` runs until its tag is released."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.gates: dict[str, asyncio.Event] = {}

    def gate(self, tag: str) -> asyncio.Event:
        return self.gates.setdefault(tag, asyncio.Event())

    async def hold(self, ctx: dict[str, Any], tag: str) -> None:
        self.started[tag] = time.monotonic()
        await self.gate(tag).wait()

    def release(self, *tags: str) -> None:
        for tag in tags or tuple(self.gates):
            self.gate(tag).set()

    def running(self) -> set[str]:
        return {tag for tag in self.started if not self.gate(tag).is_set()}


def make_worker(
    server: RedisServer,
    jobs: Jobs,
    *,
    cls: type[arq.worker.Worker] = ResilientWorker,
    max_jobs: int = 2,
    poll_delay: float = SLOW_POLL_S,
    outage_limit_s: float = 300.0,
    **options: Any,
) -> Any:
    settings = settings_for(server, redis_outage_limit_s=outage_limit_s, poll_delay_s=poll_delay)
    return cls(
        functions=[func(jobs.hold, name="hold")],
        redis_settings=redis_settings(settings),
        queue_name=f"test:{uuid.uuid4().hex[:10]}",
        poll_delay=poll_delay,
        max_jobs=max_jobs,
        keep_result=0,
        handle_signals=False,
        ctx={SETTINGS: settings},
        **options,
    )


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")
        await asyncio.sleep(0.02)


async def stop(worker: arq.worker.Worker, task: asyncio.Task[None], jobs: Jobs) -> None:
    jobs.release()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with contextlib.suppress(Exception, asyncio.CancelledError):  # Redis may be gone
        await asyncio.wait_for(worker.close(), DEADLINE_S)


async def hold(pool: ArqRedis, worker: arq.worker.Worker, tag: str) -> None:
    """Enqueue ``hold(tag)`` the plain arq way (no wake-up token)."""
    await pool.enqueue_job("hold", tag, _job_id=tag, _queue_name=worker.queue_name)


# ---------------------------------------------------------------- what counts as Redis's error


def _in_module(module: str, source: str, **names: Any) -> Any:
    """A function whose frames report ``module`` as theirs (``f_globals['__name__']``)."""
    namespace: dict[str, Any] = {"__name__": module, **names}
    exec(compile(source, f"<{module}>", "exec"), namespace)
    return namespace["call"]


async def _raised(call: Callable[[], Awaitable[Any]]) -> BaseException:
    try:
        await call()
    except Exception as exc:
        return exc
    raise AssertionError("nothing raised")


async def test_raised_by_redis_tells_redis_py_errors_from_a_hooks_own() -> None:
    async def hook_times_out() -> None:
        raise TimeoutError("the hook's own deadline")

    async def hook_with_asyncio_timeout() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(10)

    # a call into redis-py whose socket work (stdlib asyncio) times out below it
    redis_call = _in_module(
        "redis.asyncio.connection",
        "async def call():\n    await asyncio.wait_for(asyncio.sleep(10), 0.01)\n",
        asyncio=asyncio,
    )
    # redis-py calling back into user code (e.g. Redis.transaction(func)) that raises
    transaction = _in_module(
        "redis.asyncio.client", "async def call(callback):\n    await callback()\n"
    )

    assert not raised_by_redis(await _raised(hook_times_out))
    assert not raised_by_redis(await _raised(hook_with_asyncio_timeout))
    assert not raised_by_redis(ConnectionRefusedError("a hook's own socket"))
    assert not raised_by_redis(await _raised(lambda: transaction(hook_times_out)))
    exc = await _raised(redis_call)
    assert isinstance(exc, TimeoutError) and raised_by_redis(exc)
    assert raised_by_redis(RedisConnectionError("Connection refused"))
    assert raised_by_redis(WatchError("Watched variable changed"))


async def test_a_refused_redis_connection_is_redis_s_error(tmp_path: Path) -> None:
    closed = RedisServer(tmp_path / "never-started")  # a free port nobody listens on
    client = Redis(port=closed.port, socket_connect_timeout=1)
    try:
        exc = await _raised(client.ping)
    finally:
        await client.aclose()
    assert raised_by_redis(exc), repr(exc)


# ---------------------------------------------------------------- hooks, outages


@pytest.mark.parametrize("hook", ["on_job_start", "after_job_end"])
@pytest.mark.parametrize(
    "cls", [arq.worker.Worker, ResilientWorker], ids=["arq_Worker", "ResilientWorker"]
)
async def test_a_hook_raising_timeout_error_stops_the_worker_as_arqs_does(
    redis_server: RedisServer, pool: ArqRedis, cls: type[arq.worker.Worker], hook: str
) -> None:
    async def failing_hook(ctx: dict[str, Any]) -> None:
        raise TimeoutError(f"{hook}'s own deadline")

    jobs = Jobs()
    worker = make_worker(redis_server, jobs, cls=cls, poll_delay=0.05, **{hook: failing_hook})
    jobs.release("one")  # the job itself returns at once
    await hold(pool, worker, "one")
    task = asyncio.create_task(worker.async_run())
    try:
        done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)
        assert task in done, f"{cls.__name__} still polling after its {hook} hook raised"
        exc = task.exception()
        assert isinstance(exc, TimeoutError) and str(exc) == f"{hook}'s own deadline"
    finally:
        await stop(worker, task, jobs)


async def test_a_redis_restart_is_ridden_out(redis_server: RedisServer, pool: ArqRedis) -> None:
    jobs = Jobs()
    worker = make_worker(redis_server, jobs, poll_delay=0.05)
    task = asyncio.create_task(worker.async_run())
    try:
        await hold(pool, worker, "before")
        jobs.release("before")
        await eventually(lambda: "before" in jobs.started, "a job runs before the outage")

        redis_server.stop()
        await eventually(lambda: worker._redis_down_since is not None, "the loop sees it")
        await asyncio.sleep(1.5)  # several polls into the outage
        assert not task.done(), f"the worker stopped in the outage: {task.exception()!r}"

        redis_server.start()  # same port, empty (nothing persisted)
        jobs.release("after")
        await enqueue(pool, "hold", "after", _queue_name=worker.queue_name)
        await eventually(lambda: "after" in jobs.started, "a job runs after the restart")
        await eventually(lambda: worker._redis_down_since is None, "the outage is over")
        assert not task.done()
    finally:
        await stop(worker, task, jobs)


async def test_the_worker_exits_after_the_outage_limit(
    redis_server: RedisServer, pool: ArqRedis
) -> None:
    jobs = Jobs()
    worker = make_worker(redis_server, jobs, poll_delay=0.05, outage_limit_s=1.0)
    task = asyncio.create_task(worker.async_run())
    try:
        await hold(pool, worker, "before")
        jobs.release("before")
        await eventually(lambda: "before" in jobs.started, "a job runs before the outage")
        redis_server.stop()
        stopped = time.monotonic()
        done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)
        assert task in done, "the worker still polls long past redis_outage_limit_s"
        assert time.monotonic() - stopped >= 1.0, "it gave up before the limit"
        exc = task.exception()
        assert exc is not None and raised_by_redis(exc), repr(exc)
    finally:
        await stop(worker, task, jobs)


# ---------------------------------------------------------------- slots, wake-ups, claims


async def test_with_every_slot_busy_a_job_starts_as_soon_as_one_finishes(
    redis_server: RedisServer, pool: ArqRedis
) -> None:
    jobs = Jobs()
    worker = make_worker(redis_server, jobs, max_jobs=2)  # polls every 300 s
    for tag in ("a", "b"):
        await hold(pool, worker, tag)
    task = asyncio.create_task(worker.async_run())
    try:
        await eventually(lambda: jobs.running() == {"a", "b"}, "both slots taken")
        await hold(pool, worker, "c")  # no wake-up token: only a freed slot can start it
        await asyncio.sleep(0.5)
        assert "c" not in jobs.started, "a third job ran with max_jobs=2"
        jobs.release("a")
        await eventually(lambda: "c" in jobs.started, "c starts once a finishes")
        assert jobs.running() == {"b", "c"}
    finally:
        await stop(worker, task, jobs)


async def test_a_job_enqueued_while_the_worker_waits_starts_without_a_poll(
    redis_server: RedisServer, pool: ArqRedis
) -> None:
    jobs = Jobs()
    worker = make_worker(redis_server, jobs, max_jobs=2)  # polls every 300 s
    task = asyncio.create_task(worker.async_run())
    try:
        await eventually(lambda: worker._pool is not None, "the worker connects")
        await asyncio.sleep(0.3)  # idle, waiting on the wake list
        for tag in ("first", "second"):  # the second: woken again after the re-poll
            jobs.release(tag)
            await enqueue(pool, "hold", tag, _queue_name=worker.queue_name)
            await eventually(lambda tag=tag: tag in jobs.started, f"{tag} starts when woken")
            await eventually(lambda: worker.job_counter == 0, f"{tag} finishes")
        assert not task.done()
    finally:
        await stop(worker, task, jobs)


async def test_a_failed_claim_gives_every_slot_back(
    redis_server: RedisServer, pool: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_claim = worker_module.claim_jobs
    failed_with_permits: list[int] = []

    async def claim_fails_once(*args: Any, want: int, **kwargs: Any) -> list[tuple[str, int]]:
        if not failed_with_permits:
            failed_with_permits.append(want)  # how many slots it holds
            raise RedisConnectionError("connection reset during the claim (test)")
        return await real_claim(*args, want=want, **kwargs)

    monkeypatch.setattr(worker_module, "claim_jobs", claim_fails_once)
    jobs = Jobs()
    worker = make_worker(redis_server, jobs, max_jobs=3, poll_delay=0.05)
    for tag in ("a", "b", "c"):
        await hold(pool, worker, tag)
    task = asyncio.create_task(worker.async_run())
    try:
        await eventually(lambda: bool(failed_with_permits), "the first claim fails")
        assert failed_with_permits == [3]
        # every slot came back: all three run at once (a lost permit would leave one waiting)
        await eventually(lambda: jobs.running() == {"a", "b", "c"}, "three jobs in parallel")
        assert not task.done()
    finally:
        await stop(worker, task, jobs)


async def test_a_claim_with_no_room_takes_nothing_and_keeps_the_slots(
    redis_server: RedisServer, pool: ArqRedis
) -> None:
    jobs = Jobs()
    worker = make_worker(redis_server, jobs, max_jobs=2)  # polls every 300 s
    for tag in ("a", "b"):
        await hold(pool, worker, tag)
    task = asyncio.create_task(worker.async_run())
    try:
        await eventually(lambda: jobs.running() == {"a", "b"}, "both slots taken")
        await hold(pool, worker, "c")
        free = worker.sem._value
        await worker.start_jobs([b"c"])  # room = max_jobs - job_counter = 0
        assert "c" not in jobs.started
        assert await pool.exists(in_progress_key_prefix + "c") == 0, "c was claimed"
        assert worker.sem._value == free and worker.job_counter == 2
        jobs.release("a")
        await eventually(lambda: "c" in jobs.started, "c still starts when a slot frees")
    finally:
        await stop(worker, task, jobs)
