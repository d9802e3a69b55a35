"""What every job of every role shares: context binding, give-up handling, worker options."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import structlog
from arq import func
from arq.worker import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline import arq_worker, metrics
from pipeline.artifacts import ArtifactStore
from pipeline.blobs import BlobStore
from pipeline.deadletter import DeadLetters
from pipeline.errors import PermanentError
from pipeline.graph import JoinStore
from pipeline.health import check_redis
from pipeline.logs import configure_logging, get_logger
from pipeline.queue import (
    QueueNames,
    arq_max_tries,
    classify,
    describe,
    deserialize,
    redis_settings,
    retry_delay,
    serialize,
)
from pipeline.registry import Heartbeat
from pipeline.schemas import DeadLetter
from pipeline.sessions import SessionStore
from pipeline.settings import Settings, get_settings

log = get_logger("pipeline.jobs")

GiveUp = Callable[[str, str], Awaitable[None]]


def _function_name(ctx: dict[str, Any]) -> str:
    job_id = str(ctx.get("job_id", ""))
    return "watchdog" if job_id.startswith("cron:") else job_id.split(":", 1)[0]


async def bind_job_context(ctx: dict[str, Any]) -> None:
    """arq on_job_start: every log line of the job carries its job id (and session id)."""
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), job_try=ctx.get("job_try"))
    ctx["_started"] = time.monotonic()
    ctx["outcome"] = "error"  # jobs set ok / failed / retried / deferred
    metrics.job_started(ctx.get("role", "?"), _function_name(ctx))


async def unbind_job_context(ctx: dict[str, Any]) -> None:
    elapsed = time.monotonic() - float(ctx.get("_started", time.monotonic()))
    metrics.job_finished(
        ctx.get("role", "?"), _function_name(ctx), str(ctx.get("outcome", "error")), elapsed
    )
    structlog.contextvars.unbind_contextvars("job_id", "job_try", "session_id", "photo", "artifact")


async def handle_failure(
    ctx: dict[str, Any],
    exc: Exception,
    *,
    function: str,
    queue: str,
    kwargs: dict[str, Any],
    session_id: str | None,
    on_give_up: GiveUp | None = None,
    replayable: bool = True,
) -> dict[str, Any]:
    """Retry a transient failure (raises ``Retry``) or give up: dead letter + ``on_give_up``.

    Returns the failure summary a job returns when it gives up.
    """
    settings: Settings = ctx["settings"]
    job_try = int(ctx.get("job_try", 1))
    verdict = classify(exc)
    if verdict.transient:
        delay = retry_delay(settings, job_try)
        if delay is not None:
            log.warning(
                "job.retry",
                function=function,
                error_code=verdict.code,
                reason=verdict.reason,
                retry_in_s=delay,
                next_try=job_try + 1,
            )
            ctx["outcome"] = "retried"
            raise Retry(defer=delay) from exc
    log.error(
        "job.gave_up",
        function=function,
        error_code=verdict.code,
        reason=verdict.reason,
        transient=verdict.transient,
        tries=job_try,
        exc_info=verdict.transient and not verdict.code.startswith(("Client", "Endpoint")),
    )
    ctx["outcome"] = "failed"
    job_id = str(ctx.get("job_id", "unknown"))
    letters: DeadLetters = ctx["deadletters"]
    await letters.add(
        DeadLetter(
            id=f"{job_id}:{int(time.time() * 1000)}",
            function=function,
            queue=queue,
            job_id=job_id,
            kwargs=kwargs,
            error_code=verdict.code,
            reason=verdict.reason,
            attempts=job_try,
            session_id=session_id,
            replayable=replayable,
        )
    )
    if on_give_up is not None:
        await on_give_up(verdict.code, verdict.reason)
    return {"ok": False, "error_code": verdict.code, "reason": verdict.reason}


def check_crash_loop(ctx: dict[str, Any]) -> None:
    """Give up before arq does. A job re-run this often was interrupted by its worker dying
    (our own retries stop earlier); on arq's last allowed try we fail it ourselves, so the
    failure reaches ``handle_failure`` (dead letter, photo reported) instead of arq dropping
    the job silently."""
    settings: Settings = ctx["settings"]
    job_try = int(ctx.get("job_try", 1))
    if job_try >= arq_max_tries(settings):
        raise PermanentError(
            f"the worker running this job stopped {job_try - 1} times while it ran (killed, "
            "out of memory or timed out); giving up — see the worker logs",
            code="crash_loop",
        )


def time_budget(timeout_s: float) -> float:
    """How long a job's work may take: its arq timeout less a margin, so the job itself times
    out (a transient error, retried then dead-lettered through ``handle_failure``) before
    arq cancels it silently."""
    return max(0.5, timeout_s - max(0.5, timeout_s * 0.1))


def interrupted_retry(
    job: Callable[..., Awaitable[Any]], timeout_s: float, settings: Settings
) -> Callable[..., Awaitable[Any]]:
    """``job`` under a deadline just short of arq's own timeout, retried when it runs out.

    A job's work has its own budget (``time_budget``) and its failures go through
    ``handle_failure``. What is left — the Redis bookkeeping around the work — can still stall,
    e.g. while the redis-py retry policy rides out a Redis restart. arq treats its own timeout
    as final and never re-runs the job, which would leave its photo "processing" until the
    session deadline. Every job is idempotent, so here such a stall becomes a retry."""
    deadline_s = max(0.75, timeout_s - max(0.25, timeout_s * 0.05))

    @functools.wraps(job)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(deadline_s):
                return await job(ctx, *args, **kwargs)
        except (TimeoutError, RedisConnectionError, RedisTimeoutError) as exc:
            job_try = int(ctx.get("job_try", 1))
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
    """Options every role's WorkerSettings shares (msgpack, poll delay, health check)."""
    return {
        "redis_settings": redis_settings(settings),
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "poll_delay": settings.poll_delay_s,
        "keep_result": 60,
        "health_check_interval": 10,
        "on_job_start": bind_job_context,
        "after_job_end": unbind_job_context,
    }


def role_worker_options(
    settings: Settings,
    *,
    queue: str,
    jobs: Sequence[Callable[..., Any]],
    timeout_s: float,
    max_jobs: int,
    startup: Callable[[dict[str, Any]], Awaitable[None]],
    shutdown: Callable[[dict[str, Any]], Awaitable[None]],
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
    builds a ``ResilientWorker`` from it (see ``pipeline.arq_worker``)."""
    arq_worker.install(get_settings().redis_outage_limit_s)
    return type(
        "WorkerSettings",
        (),
        {
            "__doc__": f"arq settings of the {role} role",
            "worker_class": arq_worker.ResilientWorker,
            **options,
        },
    )


async def role_startup(ctx: dict[str, Any], role: str, **detail: Any) -> Settings:
    """What every role does first: settings, logs, Redis checks, shared stores, heartbeat."""
    settings: Settings = ctx.get("settings") or get_settings()
    ctx["settings"] = settings
    configure_logging(settings, role=role)
    redis = ctx["redis"]
    await check_redis(redis)
    ctx["blobs"] = BlobStore(redis, settings)
    ctx["artifacts"] = ArtifactStore(redis, settings)
    ctx["sessions"] = SessionStore(redis, settings)
    ctx["joins"] = JoinStore(redis, settings)
    ctx["deadletters"] = DeadLetters(redis, settings)
    ctx["queues"] = QueueNames.from_settings(settings)
    ctx["role"] = role
    if settings.metrics_port is not None:
        detail["metrics_port"] = metrics.start_server(settings.metrics_port)
        log.info("metrics.serving", port=detail["metrics_port"])
        ctx["metrics_task"] = asyncio.create_task(metrics.sample_forever(ctx))
    heartbeat = Heartbeat(redis, settings, role, **detail)
    await heartbeat.start()
    ctx["heartbeat"] = heartbeat
    return settings


async def role_shutdown(ctx: dict[str, Any]) -> None:
    heartbeat: Heartbeat | None = ctx.get("heartbeat")
    if heartbeat is not None:
        await heartbeat.stop()
    task: asyncio.Task[None] | None = ctx.get("metrics_task")
    if task is not None:
        task.cancel()
