"""``enqueue`` asks again when arq's WATCH of the job's key breaks (pure logic: a stand-in
for arq's client that fails the way redis-py does when the connection dies under a WATCH)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from arq.connections import ArqRedis
from redis.exceptions import WatchError

from pipeline.runtime import enqueue as enqueue_module
from pipeline.runtime.enqueue import ENQUEUE_TRIES, enqueue


class BrokenWatches:
    """``enqueue_job`` fails with WatchError ``breaks`` times, then answers None (a job with
    that id exists: arq queues an id once)."""

    def __init__(self, breaks: int) -> None:
        self.breaks = breaks
        self.calls = 0

    async def enqueue_job(self, function: str, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls <= self.breaks:
            raise WatchError("A ConnectionError occurred on while watching one or more keys")
        return None


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr(enqueue_module.asyncio, "sleep", instant)


async def test_a_watch_broken_by_a_failover_is_asked_again() -> None:
    redis = BrokenWatches(breaks=2)
    job = await enqueue(cast(ArqRedis, redis), "f", _queue_name="q", _job_id="j")
    assert job is None and redis.calls == 3


async def test_a_watch_that_keeps_breaking_raises() -> None:
    redis = BrokenWatches(breaks=ENQUEUE_TRIES)
    with pytest.raises(WatchError):
        await enqueue(cast(ArqRedis, redis), "f", _queue_name="q", _job_id="j")
    assert redis.calls == ENQUEUE_TRIES
