"""Fan-out / fan-in on Redis: the chord arq does not have.

A *join* waits for ``expected`` children. Each child reports its outcome once
(:meth:`JoinStore.report`); a child that gave up after its retries reports a failure, so the
join still completes. The report that completes the join enqueues the callback under a
deterministic arq job id, so however many times a child is re-run (crash, replay) the
result is counted once and the callback runs once. If a process dies between the last report
and the enqueue, the next re-run of that child — or the watchdog (:meth:`JoinStore.redrive`)
— enqueues it again; arq refuses the duplicate id.

```python
joins = JoinStore(redis, settings)
await joins.create("batch-42", expected=3,
                   callback=Callback(function="summarise", queue=queues.cpu,
                                     job_id="summarise:batch-42", arguments={"batch": "42"}))
# in each child job, when done (or when it gives up):
await joins.report("batch-42", child_id="item-7", report=ChildReport(ok=True, result={...}))
# in the callback:
reports = await joins.results("batch-42")   # {child_id: ChildReport}
await joins.complete("batch-42")
```
"""

from __future__ import annotations

import time
from typing import Any, TypeVar, overload

from arq.connections import ArqRedis
from pydantic import BaseModel, ConfigDict

from pipeline.logs import get_logger
from pipeline.runtime.enqueue import enqueue
from pipeline.schemas import ChildReport
from pipeline.settings import Settings
from pipeline.state.keys import Keys
from pipeline.state.lua import joins as lua
from pipeline.state.redisio import text, typed

log = get_logger("pipeline.runtime.joins")
R = TypeVar("R")


class Callback(BaseModel):
    """The job a join enqueues once every child has reported."""

    model_config = ConfigDict(frozen=True)

    function: str
    queue: str
    job_id: str
    arguments: dict[str, Any] = {}


class JoinProgress(BaseModel):
    counted: bool
    done: int
    expected: int

    @property
    def complete(self) -> bool:
        return self.done >= self.expected


class JoinStore:
    def __init__(self, redis: ArqRedis, settings: Settings) -> None:
        self._redis = redis
        self._client = typed(redis)
        self._keys = Keys.from_settings(settings)
        self._ttl = settings.session_ttl_s
        self._stale_s = settings.join_stale_s

    async def create(self, join_id: str, expected: int, callback: Callback) -> None:
        """Declare a join (idempotent). With ``expected == 0`` the callback fires at once."""
        if expected < 0:
            raise ValueError("a join expects zero or more children")
        key = self._keys.join(join_id)
        now = time.time()
        created = await self._client.hsetnx(key, "expected", expected)
        if created:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={
                        "callback": callback.model_dump_json(),
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                pipe.expire(key, self._ttl)
                pipe.zadd(self._keys.joins_open, {join_id: now})
                await pipe.execute()
        if expected == 0:
            await self.fire(join_id)

    async def report(self, join_id: str, child_id: str, report: ChildReport[Any]) -> JoinProgress:
        """Record a child's outcome exactly once; fire the callback when the join completes."""
        counted, done, expected = await lua.report(
            self._redis,
            self._keys,
            join_id,
            child_id,
            report.model_dump_json(),
            now=time.time(),
            ttl=self._ttl,
        )
        if expected < 0:
            raise LookupError(f"no join {join_id!r} (expired or never created)")
        progress = JoinProgress(counted=counted, done=done, expected=expected)
        if not progress.counted:
            log.info("join.duplicate_report", join=join_id, child=child_id)
        if progress.complete:
            # Also on a duplicate: the first reporter may have died before enqueueing.
            await self.fire(join_id)
        return progress

    async def fire(self, join_id: str) -> bool:
        """Enqueue the callback (deterministic id: arq refuses a duplicate). True if enqueued."""
        key = self._keys.join(join_id)
        raw, completed = await self._client.hmget(key, "callback", "completed")
        if raw is None or (completed is not None and text(completed) == "1"):
            return False
        callback = Callback.model_validate_json(text(raw))
        job = await enqueue(
            self._redis,
            callback.function,
            _job_id=callback.job_id,
            _queue_name=callback.queue,
            **callback.arguments,
        )
        await self._client.hset(key, "fired_at", time.time())
        if job is not None:
            log.info("join.fired", join=join_id, callback=callback.function, job=callback.job_id)
        return job is not None

    @overload
    async def results(self, join_id: str) -> dict[str, ChildReport[Any]]: ...
    @overload
    async def results(self, join_id: str, result: type[R]) -> dict[str, ChildReport[R]]: ...

    async def results(
        self, join_id: str, result: type[Any] | None = None
    ) -> dict[str, ChildReport[Any]]:
        """Each child's report, by child id; ``result``: the model each report's result is
        read back as (validated here, once), else plain JSON values."""
        raw = await self._client.hgetall(self._keys.join_results(join_id))
        model: type[ChildReport[Any]] = ChildReport
        if result is not None:  # a model chosen at run time: pydantic parametrizes it
            model = ChildReport[result]  # type: ignore[valid-type]
        return {text(k): model.model_validate_json(text(v)) for k, v in raw.items()}

    async def progress(self, join_id: str) -> JoinProgress | None:
        expected = await self._client.hget(self._keys.join(join_id), "expected")
        if expected is None:
            return None
        done = await self._client.hlen(self._keys.join_results(join_id))
        return JoinProgress(counted=False, done=int(done), expected=int(expected))

    async def complete(self, join_id: str) -> None:
        """The callback calls this when it is done: the join leaves the watchdog's view."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.join(join_id), "completed", "1")
            pipe.zrem(self._keys.joins_open, join_id)
            await pipe.execute()

    async def has_reported(self, join_id: str, child_id: str) -> bool:
        return bool(await self._client.hexists(self._keys.join_results(join_id), child_id))

    async def is_complete(self, join_id: str) -> bool:
        return text(await self._client.hget(self._keys.join(join_id), "completed") or b"") == "1"

    async def redrive(self, now: float | None = None) -> list[str]:
        """Fire joins whose children all reported ``join_stale_s`` ago but whose callback
        never completed (lost enqueue, or a callback that arq gave up on)."""
        moment = now if now is not None else time.time()
        ids = await self._client.zrangebyscore(
            self._keys.joins_open, "-inf", moment - self._stale_s
        )
        fired: list[str] = []
        for raw in ids:
            join_id = text(raw)
            progress = await self.progress(join_id)
            if progress is None:
                await self._client.zrem(self._keys.joins_open, join_id)
                continue
            if not progress.complete:
                continue
            if await self.fire(join_id):
                log.warning("join.redriven", join=join_id)
                fired.append(join_id)
            # Look again after another stale period, not on every sweep.
            await self._client.zadd(self._keys.joins_open, {join_id: moment})
        return fired

    async def forget(self, join_id: str) -> None:
        await self._client.delete(self._keys.join(join_id), self._keys.join_results(join_id))
        await self._client.zrem(self._keys.joins_open, join_id)
