"""The arq worker every role runs: arq's own, made to ride out a Redis restart.

arq's poll loop lets any Redis error escape and the worker process exits. Two paths are not
covered by the redis-py retry policy of ``pipeline.runtime.connection.redis_settings``:
claiming a job uses WATCH, and redis-py turns a dropped connection during WATCH into
``WatchError`` without retrying; and a command whose retries are spent raises out of the
loop. ``ResilientWorker``
keeps polling through such errors with a short pause (logged once per outage, then every
10 s) and exits only when Redis stays unreachable for ``redis_outage_limit_s``. Only errors
that come from Redis count (:func:`raised_by_redis`): anything else — a built-in
``TimeoutError`` a job hook raises, say — stops the worker as it stops arq's.

It also claims jobs in batches: one atomic Lua call (``pipeline.state.lua.queues.claim_jobs``)
claims every due job there is a free slot for, where arq makes four round trips per job, one
job after the other (see ``start_jobs``).
A failed claim takes nothing and gives every slot back. Between polls it waits on the
queue's wake list rather than sleeping (see ``_wait_for_work``).

``arq workers.<role>.WorkerSettings`` (with or without ``--watch``) builds its worker through
arq's ``create_worker``, which has no option for the worker class; ``install()`` (called when
a role's settings class is built) makes it honour a ``worker_class`` attribute of the settings
class. Settings classes without one (arq's own, a benchmark's "arq defaults") still get
arq's Worker.
"""

from __future__ import annotations

import asyncio
import sys
import time
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import arq.cli
import arq.worker
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from redis.exceptions import ResponseError, WatchError

from pipeline.errors import PipelineError
from pipeline.logs import get_logger, logging_configured
from pipeline.runtime.connection import fail_fast, open_pool
from pipeline.runtime.enqueue import wake_key
from pipeline.runtime.retry import REDIS_CANNOT_WRITE, describe, redis_cannot_write
from pipeline.settings import Settings
from pipeline.state.lua.queues import claim_jobs
from pipeline.state.redisio import typed

log = get_logger("pipeline.worker")

# redis-py's ways of saying "Redis is not reachable right now" inside arq's loop — or cannot
# take a write now (at maxmemory with noeviction: claiming a job is a write); both pass.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (*REDIS_CANNOT_WRITE, WatchError)
# Besides the standard library, what a redis-py call may run below its own frames.
_REDIS_PY_DEPENDENCIES = frozenset({"redis", "hiredis", "async_timeout"})
PAUSE_S = 0.5
REPEAT_LOG_S = 10.0


def raised_by_redis(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis being unreachable (or unable to take a write) — an outage the
    poll loop rides out — rather than an error of the code the worker runs.

    arq's poll loop also re-raises what a job's hooks (``on_job_start``, ``on_job_end``,
    ``after_job_end``) raised, so the type alone cannot tell: a built-in ``TimeoutError`` or
    ``ConnectionError`` may be a hook's own. It counts as Redis's when it is one of
    redis-py's errors (:data:`REDIS_UNAVAILABLE`, or a write refused at ``maxmemory``), or an
    ``OSError`` (built-in ``ConnectionError`` and ``TimeoutError``, which is also
    ``asyncio.TimeoutError`` and ``socket.timeout``) that was raised inside a redis-py call:
    its traceback holds a redis-py frame and below the last one only the standard library
    (``socket``, ``ssl``, ``asyncio``) or redis-py's own dependencies. So a hook that raises
    ``TimeoutError``, or whose ``asyncio.timeout`` ran out around a Redis command, stops the
    worker as arq's does; a socket error out of a command the hook sends is Redis's, as is
    one out of arq's own Redis calls in the loop (polling, claiming, finishing a job).

    The traceback is the reliable witness here: wrapping only our own Redis calls would miss
    those arq makes inside ``_poll_iteration`` and ``run_job``, which it does not expose."""
    if isinstance(exc, REDIS_UNAVAILABLE) or redis_cannot_write(exc):
        return True
    return isinstance(exc, OSError) and _raised_in_redis_py(exc.__traceback__)


def _raised_in_redis_py(tb: TracebackType | None) -> bool:
    below_redis: list[str] = []  # top-level packages of the frames below the last redis-py one
    seen_redis = False
    while tb is not None:
        package = str(tb.tb_frame.f_globals.get("__name__", "")).split(".", 1)[0]
        if package == "redis":
            seen_redis, below_redis = True, []
        else:
            below_redis.append(package)
        tb = tb.tb_next
    return seen_redis and all(
        p in sys.stdlib_module_names or p in _REDIS_PY_DEPENDENCIES for p in below_redis
    )


class ResilientWorker(arq.worker.Worker):
    """arq's Worker with batched claims, wake-ups between polls, and a poll loop that survives
    Redis outages up to ``redis_outage_limit_s`` (see the module docstring)."""

    # Class attributes, not __init__ arguments: arq reads its options from the signature of
    # Worker.__init__, which must stay arq's own.
    _redis_down_since: float | None = None
    _redis_down_logged: float = 0.0
    _wake: bool = True

    @property
    def redis_outage_limit_s(self) -> float:
        """From the role's settings in the worker's ``ctx`` (``PLANTPIPE_REDIS_OUTAGE_LIMIT_S``);
        a worker built without them (a benchmark's bare settings) uses the default."""
        settings = self.ctx.get("settings")
        if isinstance(settings, Settings):
            return settings.redis_outage_limit_s
        return float(Settings.model_fields["redis_outage_limit_s"].default)

    @property
    def role(self) -> str:
        return str(self.queue_name).rsplit(":", 1)[-1]

    def redis_url(self) -> str:
        """The configured Redis URL without its password (for messages)."""
        settings = self.ctx.get("settings")
        url = settings.redis_url if isinstance(settings, Settings) else "Redis"
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            url = urlunsplit(parts._replace(netloc=netloc))
        return url

    def run(self) -> None:
        """arq's run, with a failure before the worker started (Redis unreachable after its
        retries, an evicting Redis, a missing bucket or model) as one ``error:`` line on
        stderr and exit status 2, not a traceback (the log keeps the record)."""
        try:
            super().run()
        except Exception as exc:
            if self.ctx.get("started"):
                raise
            reason = exc.reason if isinstance(exc, PipelineError) else describe(exc)
            if raised_by_redis(exc) or "redis" in type(exc).__module__:
                reason = (
                    f"cannot reach Redis at {self.redis_url()} ({describe(exc)}): start "
                    "Redis or point PLANTPIPE_REDIS_URL at a running one"
                )
            if logging_configured():  # the log file keeps the record too
                log.error("worker.start_failed", queue=self.queue_name, reason=reason)
            print(f"error: {self.role} worker cannot start: {reason}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    async def main(self) -> None:
        if self._pool is None and self.redis_settings is not None:
            try:  # one quick try first, so a Redis that is down is said at once
                probe = await open_pool(fail_fast(self.redis_settings))
                await probe.aclose()
            except Exception as exc:
                print(
                    f"{self.role} worker: Redis at {self.redis_url()} is not reachable "
                    f"({describe(exc)}); retrying",
                    file=sys.stderr,
                    flush=True,
                )
            self._pool = await open_pool(  # as arq's main would, Sentinel included
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        await super().main()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim as many of ``job_ids`` as there are free slots in one Lua call, then run them.

        arq claims one job at a time (WATCH, EXISTS, ZSCORE, MULTI/PSETEX/EXEC: four round
        trips per job, one job after the other in the poll loop). The claim here is the same
        rule — a job is ours if it is due and no one holds its in-progress key, which we then
        set for ``in_progress_timeout_s`` — checked and taken atomically for the whole batch."""
        if not job_ids:
            return
        await self.sem.acquire()  # wait for one free slot, as arq does; take more if free
        permits = 1
        room = min(len(job_ids), self.max_jobs - self.job_counter)
        while permits < room and not self.sem.locked():
            await self.sem.acquire()
            permits += 1
        if room <= 0:
            self.sem.release()
            return
        try:
            claimed = await claim_jobs(
                self.pool,
                self.queue_name,
                job_ids,
                in_progress_prefix=in_progress_key_prefix,
                now_ms=timestamp_ms(),
                ttl_ms=int(self.in_progress_timeout_s * 1000),
                want=permits,
            )
        except BaseException:
            for _ in range(permits):
                self.sem.release()
            raise
        for _ in range(permits - len(claimed)):
            self.sem.release()
        for job_id, score in claimed:
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
            while await self._wait_for_work():  # woken: poll again now, not after arq's sleep
                await super()._poll_iteration()
        except Exception as exc:
            if not raised_by_redis(exc):  # a hook's own error: the worker stops, as arq's
                raise
            await self._redis_unavailable(exc)
        else:
            if self._redis_down_since is not None:
                log.warning(
                    "worker.redis_back",
                    queue=self.queue_name,
                    outage_s=round(time.monotonic() - self._redis_down_since, 1),
                )
                self._redis_down_since = None

    async def _wait_for_work(self) -> bool:
        """Between polls, block on the queue's wake list (``pipeline.runtime.enqueue.enqueue``)
        for up to ``poll_delay_s`` instead of sleeping — or, with every slot busy, on the first job
        to finish. True when woken (poll again at once): a job enqueued now starts now.
        Otherwise the wait took the whole delay and arq's loop skips its own sleep."""
        if self.burst:
            return False
        if self.job_counter >= self.max_jobs:
            # Every slot is busy: poll again as soon as one frees (as arq's blocking claim
            # loop effectively does), not a whole poll delay later.
            running = [task for task in self.tasks.values() if not task.done()]
            if not running:
                return False  # nothing to wait for here: arq's own sleep, never a busy loop
            done, _ = await asyncio.wait(
                running, timeout=self.poll_delay_s, return_when=asyncio.FIRST_COMPLETED
            )
            return bool(done)
        if not self._wake:
            return False
        try:
            token = await typed(self.pool).blpop(
                [wake_key(self.queue_name)], timeout=max(0.01, self.poll_delay_s)
            )
        except ResponseError as exc:  # e.g. Redis < 6 takes no fractional timeout
            self._wake = False
            log.warning("worker.wake_disabled", queue=self.queue_name, reason=str(exc))
            return False
        return token is not None

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
            if self._redis_down_logged == 0.0:  # once per outage on the console too
                limit = f"{self.redis_outage_limit_s:.0f} s"
                print(
                    f"{self.role} worker: Redis at {self.redis_url()} unreachable "
                    f"({type(exc).__name__}); polling on for up to {limit}",
                    file=sys.stderr,
                    flush=True,
                )
            self._redis_down_logged = now
            log.warning(
                "worker.redis_unavailable",
                queue=self.queue_name,
                outage_s=round(down_s, 1),
                limit_s=self.redis_outage_limit_s,
                reason=f"{type(exc).__name__}: {exc}",
            )
        await asyncio.sleep(PAUSE_S)


def create_worker(settings_cls: Any, **kwargs: Any) -> arq.worker.Worker:
    """arq's ``create_worker``, except that a settings class naming a ``worker_class`` (as
    ``pipeline.runtime.roles.worker_settings_class`` does) gets a worker of that class."""
    cls = (
        settings_cls.get("worker_class")
        if isinstance(settings_cls, dict)
        else getattr(settings_cls, "worker_class", None)
    ) or _ARQ_WORKER
    return cast(arq.worker.Worker, cls(**{**arq.worker.get_kwargs(settings_cls), **kwargs}))


_ARQ_WORKER = arq.worker.Worker


def install() -> None:
    """Let arq's CLI build the worker class a settings class names, both ways it starts one.
    Settings without one get arq's own Worker.

    ``arq workers.io.WorkerSettings`` calls ``arq.worker.run_worker``, which looks
    ``create_worker`` up in ``arq.worker`` when it runs: replacing it there is enough.
    ``--watch`` calls ``arq.cli.watch_reload``, which uses the ``create_worker`` that
    ``arq.cli`` imported by name when it was loaded — before the settings module, and so this
    function, ran: that name is replaced too (a later import of ``arq.cli`` binds ours)."""
    arq.worker.create_worker = create_worker
    vars(arq.cli)["create_worker"] = create_worker  # imported there, not exported
