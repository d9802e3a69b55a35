"""Queue names and ``enqueue``: arq's enqueue plus a wake-up for the queue's workers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from arq.connections import ArqRedis
from arq.jobs import Job
from redis.exceptions import WatchError

from pipeline.settings import Settings
from pipeline.state.redisio import typed


@dataclass(frozen=True)
class QueueNames:
    io: str
    cpu: str
    gpu: str

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueNames:
        p = settings.key_prefix
        return cls(io=f"{p}:queue:io", cpu=f"{p}:queue:cpu", gpu=f"{p}:queue:gpu")


# --- enqueue with a wake-up --------------------------------------------------------------
#
# arq workers poll their queue (every ``poll_delay_s``), so a job enqueued right after a poll
# waits for the next one, and a chain of jobs (child → callback) pays that wait at each step.
# ``enqueue`` also drops a token on the queue's wake list; plantpipe's workers
# (``pipeline.runtime.worker``) block on that list between polls for up to ``poll_delay_s``
# instead of sleeping, so they start a job as soon as it is queued. The list holds at most one
# token and expires: it never grows and never outlives its use.

WAKE_TTL_MS: Final = 60_000

#: How often ``enqueue`` asks again when arq's WATCH of the job's key was broken.
ENQUEUE_TRIES: Final = 5


def wake_key(queue_name: str) -> str:
    return f"{queue_name}:wake"


async def enqueue(
    redis: ArqRedis,
    function: str,
    *args: Any,
    _queue_name: str,
    _job_id: str | None = None,
    **kwargs: Any,
) -> Job | None:
    """``redis.enqueue_job`` plus a wake-up for the queue's workers (when the job is due now).
    Returns arq's ``Job``, or None when a job with that id already exists."""
    for attempt in range(1, ENQUEUE_TRIES + 1):
        try:
            job = await redis.enqueue_job(
                function, *args, _job_id=_job_id, _queue_name=_queue_name, **kwargs
            )
            break
        except WatchError:
            # arq WATCHes the job's key while it queues the job: the connection broke under
            # the WATCH (a Redis restart or failover; redis-py does not retry a watched
            # pipeline), or another client queued the same id meanwhile. Asking again is
            # safe: arq queues a job id once (the next try sees it and returns None).
            if attempt == ENQUEUE_TRIES:
                raise
            await asyncio.sleep(0.1 * attempt)
    if job is not None and "_defer_by" not in kwargs and "_defer_until" not in kwargs:
        key = wake_key(_queue_name)
        async with typed(redis).pipeline(transaction=False) as pipe:
            pipe.lpush(key, b"1")
            pipe.ltrim(key, 0, 0)
            pipe.pexpire(key, WAKE_TTL_MS)
            await pipe.execute()
    return job
