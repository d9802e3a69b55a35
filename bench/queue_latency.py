"""Section 4: queue latency (enqueue → job start, idle worker) and no-op jobs/s.

Two arq workers of this module, each on its own queue, run side by side (repetitions
interleaved):

* ``bench.queue_latency.WorkerSettings`` — plantpipe as configured: the common worker options
  of every role (``pipeline.runtime.roles.common_worker_options``: msgpack, ``poll_delay`` from
  settings = 0.05 s, ``keep_result`` 60, job start/end hooks for logs and metrics) on
  plantpipe's worker class (wake-up on ``pipeline.runtime.enqueue.enqueue``, batched claims);
* ``bench.queue_latency.ArqDefaultSettings`` — arq's own Worker with its defaults
  (``poll_delay`` 0.5 s,
  ``max_jobs`` 10, ``keep_result`` 3600, no hooks); only the serializer is plantpipe's msgpack
  so both read the same payloads.

Both have ``max_jobs`` 10. Latency: jobs arrive one by one at random gaps (10–40 ms) so the
worker is idle when each comes; each job writes ``time.time()`` at its start into a hash, and
latency = that − the time just before ``enqueue_job`` was called. Throughput: N no-op jobs are
enqueued to become due together (``_defer_until``); jobs/s = N ÷ (last finish − first start).
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from arq import func

from bench.common import Stat
from bench.harness import Harness, SectionOutput, settings_for
from pipeline.runtime.connection import open_pool, redis_settings
from pipeline.runtime.enqueue import enqueue
from pipeline.runtime.roles import common_worker_options, worker_settings_class
from pipeline.runtime.serialization import deserialize, serialize
from pipeline.settings import Settings, get_settings

MAX_JOBS: Final = 10
CONFIGS: Final = ("ours", "default")


def queue_for(settings: Settings, config: str) -> str:
    return f"{settings.key_prefix}:queue:latency-{config}"


# --------------------------------------------------------------------------- the workers


async def stamp(ctx: dict[str, Any], key: str) -> None:
    """Record when this job started (the latency probe)."""
    started = time.time()
    redis: Any = ctx["redis"]
    await redis.hset(key, str(ctx["job_id"]), repr(started))


async def tick(ctx: dict[str, Any], key: str, target: int) -> None:
    """No-op job of the throughput run: count, note the first start and the last finish."""
    started = time.time()
    redis: Any = ctx["redis"]
    done = int(await redis.hincrby(key, "count", 1))
    if done == 1:
        await redis.hset(key, "first", repr(started))
    if done == target:
        await redis.rpush(f"{key}:done", repr(time.time()))


def _announce(config: str) -> Any:
    async def startup(ctx: dict[str, Any]) -> None:
        redis: Any = ctx["redis"]
        await redis.set(f"{get_settings().key_prefix}:ready:{config}", "1", ex=3600)

    return startup


def _functions() -> list[Any]:
    return [func(stamp, name="stamp"), func(tick, name="tick")]


_settings = get_settings()
WorkerSettings = worker_settings_class(
    "latency",
    {
        **common_worker_options(_settings),
        "functions": _functions(),
        "queue_name": queue_for(_settings, "ours"),
        "on_startup": _announce("ours"),
        "max_jobs": MAX_JOBS,
    },
)
"""plantpipe's configuration (poll delay 0.05 s)."""

ArqDefaultSettings = type(  # a plain class: arq's own Worker (no plantpipe worker_class)
    "ArqDefaultSettings",
    (),
    {
        "redis_settings": redis_settings(_settings),
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "functions": _functions(),
        "queue_name": queue_for(_settings, "default"),
        "on_startup": _announce("default"),
    },
)
"""arq's defaults (poll delay 0.5 s), msgpack serializer."""


# --------------------------------------------------------------------------- the driver


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def latency_rep(
    redis: Any, settings: Settings, config: str, jobs: int, tag: str
) -> list[float]:
    key = f"{settings.key_prefix}:lat:{config}:{tag}"
    queue = queue_for(settings, config)
    sent: dict[str, float] = {}
    for i in range(jobs):
        await asyncio.sleep(random.uniform(0.010, 0.040))
        job_id = f"{settings.key_prefix}:lat:{config}:{tag}:{i}"
        sent[job_id] = time.time()
        if config == "ours":  # plantpipe's enqueue also wakes the queue's workers
            await enqueue(redis, "stamp", key, _job_id=job_id, _queue_name=queue)
        else:
            await redis.enqueue_job("stamp", key, _job_id=job_id, _queue_name=queue)
    deadline = time.monotonic() + 30
    while int(await redis.hlen(key)) < jobs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{config}: only {await redis.hlen(key)} of {jobs} jobs started")
        await asyncio.sleep(0.05)
    started = await redis.hgetall(key)
    await redis.delete(key)
    return [(float(started[k.encode()]) - t) * 1000 for k, t in sent.items()]


async def throughput_rep(redis: Any, settings: Settings, config: str, jobs: int, tag: str) -> float:
    key = f"{settings.key_prefix}:tp:{config}:{tag}"
    queue = queue_for(settings, config)
    due = datetime.now(UTC) + timedelta(seconds=0.5 + jobs * 0.003)
    slots = asyncio.Semaphore(50)

    async def enqueue(i: int) -> None:
        async with slots:
            await redis.enqueue_job(
                "tick",
                key,
                jobs,
                _job_id=f"{settings.key_prefix}:tp:{config}:{tag}:{i}",
                _queue_name=queue,
                _defer_until=due,
            )

    await asyncio.gather(*(enqueue(i) for i in range(jobs)))
    if datetime.now(UTC) >= due:
        raise RuntimeError("enqueueing took longer than planned; the run would not be fair")
    item = await redis.blpop([f"{key}:done"], timeout=120)
    if item is None:
        raise TimeoutError(f"{config}: {jobs} no-op jobs not done within 120 s")
    first = float(await redis.hget(key, "first") or 0)
    await redis.delete(key, f"{key}:done")
    return jobs / (float(item[1]) - first)


async def run(h: Harness) -> SectionOutput:
    reps = 5
    latency_jobs = 40 if h.quick else 100
    throughput_jobs = 300 if h.quick else 1000
    prefix = h.prefix("latency")
    env = h.env(prefix)
    workers = {
        "ours": h.arq_worker("latency-ours", "bench.queue_latency.WorkerSettings", env),
        "default": h.arq_worker("latency-default", "bench.queue_latency.ArqDefaultSettings", env),
    }
    redis_probe = h.redis

    for config, proc in workers.items():

        async def ready(config: str = config) -> bool:
            return bool(await redis_probe.exists(f"{prefix}:ready:{config}"))

        await h.wait_until(ready, f"{config} worker ready", 60, [proc])
    settings = settings_for(h, prefix)
    redis = await open_pool(
        redis_settings(settings), job_serializer=serialize, job_deserializer=deserialize
    )
    p50: dict[str, list[float]] = {c: [] for c in CONFIGS}
    p99: dict[str, list[float]] = {c: [] for c in CONFIGS}
    rates: dict[str, list[float]] = {c: [] for c in CONFIGS}
    try:
        for config in CONFIGS:  # warm-up
            await latency_rep(redis, settings, config, 5, "warm")
        for rep in range(reps):
            for config in CONFIGS:
                lat = await latency_rep(redis, settings, config, latency_jobs, str(rep))
                p50[config].append(percentile(lat, 50))
                p99[config].append(percentile(lat, 99))
        for rep in range(reps):
            for config in CONFIGS:
                rates[config].append(
                    await throughput_rep(redis, settings, config, throughput_jobs, str(rep))
                )
    finally:
        await redis.aclose()
        h.stop(*workers.values())

    names = {
        "ours": "plantpipe as configured (poll_delay 0.05 s, wake-up on `enqueue`)",
        "default": "arq defaults (poll_delay 0.5 s)",
    }
    lines = [
        f"{reps} repetitions; latency: {latency_jobs} jobs per repetition, each arriving at an "
        f"idle worker; throughput: {throughput_jobs} no-op jobs due at once. Both workers "
        f"`max_jobs` {MAX_JOBS}, msgpack. Table cells: median over repetitions of each "
        "repetition's percentile (min–max).",
        "",
        "| worker | enqueue → start p50 (ms) | p99 (ms) | no-op jobs/s |",
        "|---|---|---|---|",
    ]
    for config in CONFIGS:
        lines.append(
            f"| {names[config]} | {Stat.of(p50[config]).fmt(1)} | {Stat.of(p99[config]).fmt(1)} "
            f"| {Stat.of(rates[config]).fmt(0)} |"
        )
    ours50, def50 = Stat.of(p50["ours"]).median, Stat.of(p50["default"]).median
    lines += [
        "",
        "An idle arq worker finds a job at its next poll, so with arq's own worker latency ≈ "
        "uniform(0, poll_delay) plus its claim (WATCH/MULTI on the in-progress key, then "
        "fetching the job: about five Redis round trips), one job at a time. plantpipe's "
        "worker blocks on the queue's wake list between polls, and "
        "`pipeline.runtime.enqueue.enqueue` drops a token there, so a job starts as soon as "
        "it is queued; it claims every due "
        "job it has a slot for in one Lua call, and with every slot busy it polls again as "
        "soon as a job finishes rather than after the poll delay.",
    ]
    headlines = [
        f"queue latency p50: {ours50:.1f} ms (plantpipe) vs {def50:.1f} ms (arq defaults); "
        f"no-op throughput {Stat.of(rates['ours']).median:.0f} vs "
        f"{Stat.of(rates['default']).median:.0f} jobs/s"
    ]
    return "\n".join(lines), headlines
