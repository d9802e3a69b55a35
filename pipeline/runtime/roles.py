"""Role lifecycle: worker options, start-up and shutdown shared by the io, cpu and gpu roles.

A role's ``WorkerSettings`` is built from one :class:`Settings` object (``worker_options``
in ``workers/<role>.py``); that object travels in arq's worker ``ctx`` to the role's
start-up, which builds the role's typed :class:`~pipeline.runtime.context.RoleContext` once.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import structlog
from arq import func
from arq.connections import ArqRedis
from arq.worker import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.errors import InvalidSettings
from pipeline.logs import configure_logging, get_logger
from pipeline.runtime import metrics, worker
from pipeline.runtime.connection import redis_settings
from pipeline.runtime.context import ROLE_CONTEXT, SETTINGS, RoleContext
from pipeline.runtime.health import check_redis
from pipeline.runtime.registry import Heartbeat
from pipeline.runtime.retry import arq_max_tries, describe, retry_delay
from pipeline.runtime.serialization import deserialize, serialize
from pipeline.settings import Settings, get_settings

log = get_logger("pipeline.roles")

Startup = Callable[[dict[str, Any]], Awaitable[None]]


def _function_name(ctx: dict[str, Any]) -> str:
    job_id = str(ctx.get("job_id", ""))
    return "watchdog" if job_id.startswith("cron:") else job_id.split(":", 1)[0]


def _role(ctx: dict[str, Any]) -> str:
    context = ctx.get(ROLE_CONTEXT)
    return context.role if isinstance(context, RoleContext) else str(ctx.get("role", "?"))


async def bind_job_context(ctx: dict[str, Any]) -> None:
    """arq on_job_start: every log line of the job carries its job id (and session id)."""
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), job_try=ctx.get("job_try"))
    ctx["_started"] = time.monotonic()
    ctx["outcome"] = "error"  # jobs set ok / failed / retried / deferred
    metrics.job_started(_role(ctx), _function_name(ctx))


async def unbind_job_context(ctx: dict[str, Any]) -> None:
    elapsed = time.monotonic() - float(ctx.get("_started", time.monotonic()))
    outcome = str(ctx.get("outcome", "error"))
    metrics.job_finished(_role(ctx), _function_name(ctx), outcome, elapsed)
    structlog.contextvars.unbind_contextvars("job_id", "job_try", "session_id", "photo", "artifact")


def interrupted_retry(
    job: Callable[..., Awaitable[Any]], timeout_s: float, settings: Settings
) -> Callable[..., Awaitable[Any]]:
    """``job`` under a deadline just short of arq's own timeout, retried when it runs out.

    A job's work has its own budget (``JobRun.guard``) and its failures are dead-lettered
    there. What is left — the Redis bookkeeping around the work — can still stall, e.g. while
    the redis-py retry policy rides out a Redis restart. arq treats its own timeout as final
    and never re-runs the job, which would leave its photo "processing" until the session
    deadline. Every job is idempotent, so here such a stall becomes a retry."""
    deadline_s = max(0.75, timeout_s - max(0.25, timeout_s * 0.05))
    last_try = arq_max_tries(settings)

    @functools.wraps(job)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        job_try = int(ctx.get("job_try", 1))
        if job_try >= last_try:
            # arq's last allowed try: the job gives up by itself (``JobRun.crash_loop``:
            # dead letter, its photo reported). Interrupting it here would hand arq a
            # try it drops unrun ("max retries exceeded"), leaving the photo unreported and
            # its session "processing" until the deadline; so only arq's timeout bounds it.
            return await job(ctx, *args, **kwargs)
        try:
            async with asyncio.timeout(deadline_s):
                return await job(ctx, *args, **kwargs)
        except (TimeoutError, RedisConnectionError, RedisTimeoutError) as exc:
            delay = retry_delay(settings, job_try)
            if delay is None:  # our tries are spent: arq's max_tries ceiling ends it
                delay = max([1.0, *settings.retry_delays_s])
            log.warning(
                "job.interrupted",
                function=job.__name__,
                reason=describe(exc),
                after_s=deadline_s if isinstance(exc, TimeoutError) else None,
                retry_in_s=delay,
                next_try=job_try + 1,
            )
            ctx["outcome"] = "retried"
            raise Retry(defer=delay) from exc

    return run


def common_worker_options(settings: Settings) -> dict[str, Any]:
    """Options every role's WorkerSettings shares (msgpack, poll delay, health check, and
    the settings themselves in the worker's ``ctx``)."""
    return {
        "redis_settings": redis_settings(settings),
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "poll_delay": settings.poll_delay_s,
        "keep_result": 60,
        "health_check_interval": 10,
        "on_job_start": bind_job_context,
        "after_job_end": unbind_job_context,
        "ctx": {SETTINGS: settings},
    }


def role_worker_options(
    settings: Settings,
    *,
    queue: str,
    jobs: Sequence[Callable[..., Any]],
    timeout_s: float,
    max_jobs: int,
    startup: Startup,
    shutdown: Startup,
    **extra: Any,
) -> dict[str, Any]:
    """One role's arq options: its jobs (named after their functions, one timeout, our
    max-tries ceiling), its queue, start-up and shutdown, plus the options every role shares."""
    return {
        **common_worker_options(settings),
        "functions": [
            func(
                cast(Any, interrupted_retry(job, timeout_s, settings)),
                name=job.__name__,
                timeout=timeout_s,
                max_tries=arq_max_tries(settings),
            )
            for job in jobs
        ],
        "queue_name": queue,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": max_jobs,
        **extra,
    }


def worker_settings_class(role: str, options: dict[str, Any]) -> type:
    """A class arq's CLI can read (``arq workers.<role>.WorkerSettings``) from a dict; arq
    builds a ``ResilientWorker`` from it (see ``pipeline.runtime.worker``)."""
    worker.install()
    return type(
        "WorkerSettings",
        (),
        {
            "__doc__": f"arq settings of the {role} role",
            "worker_class": worker.ResilientWorker,
            **options,
        },
    )


def import_settings(role: str) -> Settings:
    """The settings ``arq workers.<role>.WorkerSettings`` is built from at import: an invalid
    one is one ``error:`` line on stderr and exit 2, not an import traceback."""
    try:
        return get_settings()
    except InvalidSettings as exc:
        print(f"error: {role} worker cannot start: {exc.reason}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def role_settings(ctx: dict[str, Any]) -> Settings:
    """The settings a role's worker was built from (``common_worker_options`` puts them in
    arq's ``ctx``)."""
    settings = ctx.get(SETTINGS)
    if not isinstance(settings, Settings):
        raise RuntimeError("worker started without settings: build it with worker_options()")
    return settings


async def role_startup(ctx: dict[str, Any], role: str) -> tuple[Settings, ArqRedis]:
    """What every role does first: logs configured, Redis checked. Returns the settings and
    Redis to build the role's context from (then :func:`role_started`)."""
    settings = role_settings(ctx)
    configure_logging(settings, role=role)
    redis: ArqRedis = ctx["redis"]
    await check_redis(redis)
    return settings, redis


async def role_started(ctx: dict[str, Any], context: RoleContext, **detail: Any) -> None:
    """What every role does once its context is built: keep it for the jobs, serve metrics
    (when configured), start the heartbeat, and mark the worker started."""
    ctx[ROLE_CONTEXT] = context
    settings = context.settings
    if settings.metrics_port is not None:
        detail["metrics_port"] = metrics.start_server(settings.metrics_port)
        log.info("metrics.serving", port=detail["metrics_port"])
        ctx["metrics_task"] = asyncio.create_task(metrics.sample_forever(context))
    heartbeat = Heartbeat(context.redis, settings, context.role, **detail)
    await heartbeat.start()
    ctx["heartbeat"] = heartbeat
    ctx["started"] = True


async def role_shutdown(ctx: dict[str, Any]) -> None:
    heartbeat: Heartbeat | None = ctx.get("heartbeat")
    if heartbeat is not None:
        await heartbeat.stop()
    task: asyncio.Task[None] | None = ctx.get("metrics_task")
    if task is not None:
        task.cancel()
