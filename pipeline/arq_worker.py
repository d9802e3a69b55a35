"""The arq worker every role runs: arq's own, made to ride out a Redis restart.

arq's poll loop lets any Redis error escape and the worker process exits. Two paths are not
covered by the redis-py retry policy of ``pipeline.queue.redis_settings``: claiming a job uses
WATCH, and redis-py turns a dropped connection during WATCH into ``WatchError`` without
retrying; and a command whose retries are spent raises out of the loop. ``ResilientWorker``
keeps polling through such errors with a short pause (logged once per outage, then every
10 s) and exits only when Redis stays unreachable for ``redis_outage_limit_s``. A job whose
claim failed half-way gives its slot back, so the worker keeps its full concurrency.

``arq workers.<role>.WorkerSettings`` builds its worker through ``arq.worker.create_worker``,
which has no option for the worker class; ``install()`` (called when a role's settings class
is built) points arq at this subclass. It changes nothing else in arq.
"""

from __future__ import annotations

import asyncio
import time

import arq.worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from pipeline.logs import get_logger

log = get_logger("pipeline.worker")

# What "Redis is not reachable right now" looks like from inside arq's loop.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    WatchError,
    ConnectionError,
    TimeoutError,
)
PAUSE_S = 0.5
REPEAT_LOG_S = 10.0


class ResilientWorker(arq.worker.Worker):
    """arq's Worker whose poll loop survives Redis outages up to ``redis_outage_limit_s``."""

    # Class attributes, not __init__ arguments: arq reads its options from the signature of
    # Worker.__init__, which must stay arq's own.
    redis_outage_limit_s: float = 300.0
    _redis_down_since: float | None = None
    _redis_down_logged: float = 0.0

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:  # one claim at a time, so a failure costs at most one claim
            counted = self.job_counter
            try:
                await super().start_jobs([job_id])
            except REDIS_UNAVAILABLE:
                if self.job_counter > counted and job_id.decode() not in self.tasks:
                    # arq took a slot for this claim and never started the job: give it back
                    self.job_counter -= 1
                    self.sem.release()
                raise

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_UNAVAILABLE as exc:
            await self._redis_unavailable(exc)
        else:
            if self._redis_down_since is not None:
                log.warning(
                    "worker.redis_back",
                    queue=self.queue_name,
                    outage_s=round(time.monotonic() - self._redis_down_since, 1),
                )
                self._redis_down_since = None

    async def _redis_unavailable(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._redis_down_since is None:
            self._redis_down_since = now
            self._redis_down_logged = 0.0
        down_s = now - self._redis_down_since
        if down_s > self.redis_outage_limit_s:
            log.error(
                "worker.redis_gone",
                queue=self.queue_name,
                outage_s=round(down_s, 1),
                reason=f"{type(exc).__name__}: {exc}",
                action="exiting; check PLANTPIPE_REDIS_URL and the Redis server, then restart",
            )
            raise exc
        if now - self._redis_down_logged >= REPEAT_LOG_S:
            self._redis_down_logged = now
            log.warning(
                "worker.redis_unavailable",
                queue=self.queue_name,
                outage_s=round(down_s, 1),
                limit_s=self.redis_outage_limit_s,
                reason=f"{type(exc).__name__}: {exc}",
            )
        await asyncio.sleep(PAUSE_S)


def install(outage_limit_s: float) -> None:
    """Make ``arq``'s CLI (and ``arq.worker.run_worker``) build ``ResilientWorker``s."""
    ResilientWorker.redis_outage_limit_s = outage_limit_s
    arq.worker.Worker = ResilientWorker  # type: ignore[misc]
