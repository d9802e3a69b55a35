"""Section 1: S3 upload throughput of the io role against a 50 ms S3, at concurrency 50.

Three ways to put N objects into the S3 stub (a separate process, 50 ms per request):

* **plantpipe**: an ``arq workers.io.WorkerSettings`` process fed by
  ``PipelineClient.upload`` in this process; time from the first upload call to the return of
  the last ``handle.wait()`` (the client stores each payload as a blob in Redis, the io worker
  copies it to S3 under its semaphore of 50 and records the artifact's state);
* **raw aioboto3**: one asyncio loop, ``asyncio.Semaphore(50)`` around ``put_object`` on one
  client with the same botocore settings — the ceiling for one asyncio process;
* **Celery gevent** (the original design): ``celery worker --pool=gevent --concurrency=50``
  running boto3 ``put_object``, the bytes carried in the task arguments; time from the first
  ``apply_async`` to the group's results.

The physical limit is concurrency / latency = 50 / 0.05 s = 1000 objects/s.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Any, Final

import aioboto3
from botocore.config import Config

from bench.cluster import celery_produce, start_celery_worker
from bench.common import Stat
from bench.harness import Harness, Proc, SectionOutput, settings_for
from pipeline.client import PipelineClient

LATENCY_MS: Final = 50.0
CONCURRENCY: Final = 50
LIMIT_OBJ_S: Final = CONCURRENCY / (LATENCY_MS / 1000.0)
KIB: Final = 1024
MIB: Final = 1024 * 1024
CONTENT_TYPE: Final = "application/octet-stream"
REP_TIMEOUT_S: Final = 240.0


@dataclass(frozen=True)
class Case:
    count: int
    size: int

    @property
    def label(self) -> str:
        return f"{self.size // MIB} MiB" if self.size >= MIB else f"{self.size // KIB} KiB"

    @property
    def tag(self) -> str:
        return self.label.replace(" ", "").lower()


@dataclass(frozen=True)
class Sample:
    wall_s: float
    worker_cpu_s: float
    producer_cpu_s: float
    redis_cpu_s: float = 0.0
    max_in_flight: int = 0


async def measured(h: Harness, run: Awaitable[Sample]) -> Sample:
    """Run one repetition; add the Redis server's CPU and the stub's peak in-flight count."""
    await h.stub_reset()
    redis0 = await h.redis_cpu_seconds()
    sample = await run
    redis_cpu = await h.redis_cpu_seconds() - redis0
    stats = await h.stub_stats()
    peak = stats.get("max_in_flight", 0)
    return replace(
        sample, redis_cpu_s=redis_cpu, max_in_flight=int(peak) if isinstance(peak, int) else 0
    )


def payloads(count: int, size: int) -> list[bytes]:
    """Distinct random payloads: blobs are content-addressed, equal bytes would be stored once."""
    if size <= 256 * KIB:
        return [os.urandom(size) for _ in range(count)]
    base = os.urandom(size)
    return [i.to_bytes(8, "big") + base[8:] for i in range(count)]


def s3_config() -> Config:
    """The botocore settings of plantpipe's S3ObjectStore (pipeline/storage/s3.py)."""
    return Config(
        region_name="us-east-1",
        max_pool_connections=CONCURRENCY,
        connect_timeout=5.0,
        read_timeout=30.0,
        retries={"total_max_attempts": 1, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
    )


# --------------------------------------------------------------------------- plantpipe


async def ours_rep(
    h: Harness, client: PipelineClient, worker: Proc, keys: list[str], data: list[bytes]
) -> Sample:
    enqueue_slots = asyncio.Semaphore(32)
    wait_slots = asyncio.Semaphore(256)

    async def one(i: int) -> str:
        async with enqueue_slots:
            handle = await client.upload(keys[i], data[i], content_type=CONTENT_TYPE)
        async with wait_slots:
            await handle.wait()
        return handle.artifact_id

    cpu_w, cpu_p = worker.cpu_seconds(), time.process_time()
    t0 = time.perf_counter()
    async with asyncio.timeout(REP_TIMEOUT_S):
        ids = await asyncio.gather(*(one(i) for i in range(len(keys))))
    wall = time.perf_counter() - t0
    h.track(*ids)
    return Sample(wall, worker.cpu_seconds() - cpu_w, time.process_time() - cpu_p)


# --------------------------------------------------------------------------- raw aioboto3


async def raw_rep(s3: Any, bucket: str, keys: list[str], data: list[bytes]) -> Sample:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with slots:
            await s3.put_object(Bucket=bucket, Key=keys[i], Body=data[i], ContentType=CONTENT_TYPE)

    cpu = time.process_time()
    t0 = time.perf_counter()
    async with asyncio.timeout(REP_TIMEOUT_S):
        await asyncio.gather(*(one(i) for i in range(len(keys))))
    wall = time.perf_counter() - t0
    used = time.process_time() - cpu
    return Sample(wall, used, used)


# --------------------------------------------------------------------------- Celery


async def celery_rep(h: Harness, queue: str, worker: Proc, case: Case) -> Sample:
    cpu = worker.cpu_seconds()
    out = await celery_produce(
        h, queue, "io", "--count", str(case.count), "--size", str(case.size),
        "--key-prefix", f"io-{case.tag}", "--timeout", str(REP_TIMEOUT_S),
        timeout=REP_TIMEOUT_S + 60,
    )  # fmt: skip
    return Sample(float(out["wall_s"]), worker.cpu_seconds() - cpu, float(out["producer_cpu_s"]))


# --------------------------------------------------------------------------- the section


def _row(system: str, case: Case, samples: list[Sample]) -> tuple[str, float]:
    rates = [case.count / s.wall_s for s in samples]
    obj = Stat.of(rates)
    mib = Stat.of([r * case.size / MIB for r in rates])
    frac = Stat.of([r / LIMIT_OBJ_S for r in rates])
    worker_cpu = Stat.of([s.worker_cpu_s * 1000 / case.count for s in samples])
    producer_cpu = Stat.of([s.producer_cpu_s * 1000 / case.count for s in samples])
    redis_cpu = Stat.of([s.redis_cpu_s * 1000 / case.count for s in samples])
    peak = max(s.max_in_flight for s in samples)
    row = (
        f"| {system} | {case.label} × {case.count} | {obj.fmt(0)} | {mib.fmt(1)} | "
        f"{frac.fmt(2)} | {worker_cpu.fmt(2)} | {producer_cpu.fmt(2)} | {redis_cpu.fmt(2)} | "
        f"{peak} |"
    )
    return row, obj.median


async def run(h: Harness) -> SectionOutput:
    reps = 5
    cases = (
        [Case(300, 64 * KIB), Case(30, 4 * MIB)]
        if h.quick
        else [Case(1000, 64 * KIB), Case(50, 4 * MIB)]
    )
    await h.stub_latency(0)
    prefix = h.prefix("io")

    # plantpipe's io worker
    worker = h.arq_worker("io-worker", "workers.io.WorkerSettings", h.env(prefix))
    await h.wait_for_heartbeat(prefix, "io", worker)
    settings = settings_for(h, prefix)
    client = PipelineClient(settings)
    await client.connect()

    # Celery's gevent worker (the original design), if its venv is there
    queue = f"bench-{h.run_id}-celery-io"
    celery_worker = await start_celery_worker(h, queue)
    if celery_worker is not None:
        await celery_produce(h, queue, "ensure-bucket", timeout=120)

    session = aioboto3.Session()
    samples: dict[tuple[str, Case], list[Sample]] = {}
    try:
        async with session.client(
            "s3",
            endpoint_url=h.stub_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=s3_config(),
        ) as s3:
            await h.stub_latency(LATENCY_MS)
            # Warm-up, not counted: connections, the worker's first jobs, Celery's imports.
            warm = Case(100, 64 * KIB)
            warm_keys = [f"io-warm/{i}" for i in range(warm.count)]
            warm_data = payloads(warm.count, warm.size)
            await ours_rep(h, client, worker, warm_keys, warm_data)
            await raw_rep(s3, prefix, warm_keys, warm_data)
            if celery_worker is not None:
                await celery_rep(h, queue, celery_worker, warm)
            for case in cases:
                keys = [f"io-{case.tag}/{i}" for i in range(case.count)]
                data = payloads(case.count, case.size)
                # Interleaved (ours, raw, Celery) × reps: load drift hits all three alike.
                for _rep in range(reps):
                    samples.setdefault(("ours", case), []).append(
                        await measured(h, ours_rep(h, client, worker, keys, data))
                    )
                    samples.setdefault(("raw", case), []).append(
                        await measured(h, raw_rep(s3, prefix, keys, data))
                    )
                    if celery_worker is not None:
                        samples.setdefault(("celery", case), []).append(
                            await measured(h, celery_rep(h, queue, celery_worker, case))
                        )
                del data
    finally:
        await client.close()
        h.stop(worker)
        if celery_worker is not None:
            h.stop(celery_worker)
        await h.stub_latency(0)
        await h.stub_reset(store=True)

    names = {
        "ours": "plantpipe io worker (arq + aioboto3, `PipelineClient.upload`)",
        "raw": "raw aioboto3 loop, `Semaphore(50)` (ceiling of one asyncio process)",
        "celery": "Celery `--pool=gevent --concurrency=50` + boto3 (original design)",
    }
    lines = [
        f"{reps} repetitions per cell, interleaved; S3 stub in its own process, "
        f"{LATENCY_MS:.0f} ms per request; concurrency {CONCURRENCY}; physical limit "
        f"{CONCURRENCY} / {LATENCY_MS / 1000:.2f} s = **{LIMIT_OBJ_S:.0f} objects/s** "
        f"(= {LIMIT_OBJ_S * 64 / 1024:.1f} MiB/s at 64 KiB, {LIMIT_OBJ_S * 4:.0f} MiB/s at "
        '4 MiB); "of limit" is objects/s ÷ 1000 (the same fraction for MiB/s).',
        "",
        "| system | objects | objects/s | MiB/s | of limit | worker CPU s / 1000 uploads "
        "| producer CPU s / 1000 | Redis CPU s / 1000 | S3 requests in flight, max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    medians: dict[tuple[str, Case], float] = {}
    for case in cases:
        for system in ("ours", "raw", "celery"):
            if (system, case) in samples:
                row, median = _row(names[system], case, samples[(system, case)])
                lines.append(row)
                medians[(system, case)] = median
    small = cases[0]
    headlines: list[str] = []
    ours_m, raw_m = medians[("ours", small)], medians[("raw", small)]
    vs_raw = ours_m / raw_m
    verdict_raw = "met" if vs_raw >= 0.9 else "**NOT met**"
    lines += [
        "",
        "Worker CPU = user + sys of the worker process(es) from `/proc` over the repetition "
        "(the arq io worker; the Celery worker; for raw aioboto3 the benchmark process, which "
        "is its own worker). Producer CPU = the side that submits: `PipelineClient.upload` + "
        "`handle.wait()` in the benchmark process for plantpipe, `group(...).apply_async()` + "
        "`GroupResult.get()` in a producer process for Celery. Redis CPU = the Redis "
        "server's user + sys (`INFO cpu`) over the repetition (a shared server: other "
        "clients count too). In flight = the stub's highest count of concurrent S3 requests "
        "(below 50: the process ran out of CPU before it ran out of S3 slots).",
        "",
        "Payloads are distinct random bytes. plantpipe: the client stores each payload once "
        "as a content-addressed blob in Redis and the job carries a reference; the worker "
        "also computes MD5 (Content-MD5) and SHA-256 (metadata) per object, consults the "
        "shared circuit breaker and records the artifact's state. Celery: the task arguments "
        "carry the bytes (kombu JSON → base64, as the original's `file_bytes` argument did); "
        "boto3 `put_object` with the same client settings (50 pooled connections, no SDK "
        "retries, checksums when required) and nothing else.",
        "",
        f"Targets at {small.label}: plantpipe ≥ 0.9× raw aioboto3 — {vs_raw:.2f}× ({verdict_raw})",
    ]
    headlines.append(
        f"io {small.label}: plantpipe {ours_m:.0f} obj/s = {vs_raw:.2f}× raw aioboto3 "
        f"({raw_m:.0f} obj/s; target ≥ 0.9×: {verdict_raw})"
    )
    if ("celery", small) in medians:
        vs_celery = ours_m / medians[("celery", small)]
        verdict_celery = "met" if vs_celery >= 3 else "**NOT met**"
        lines[-1] += f"; plantpipe ≥ 3× Celery gevent — {vs_celery:.2f}× ({verdict_celery})."
        headlines.append(
            f"io {small.label}: plantpipe = {vs_celery:.2f}× Celery gevent "
            f"({medians[('celery', small)]:.0f} obj/s; target ≥ 3×: {verdict_celery})"
        )
    else:
        lines[-1] += f"; Celery not measured: {h.celery_problem}."
        headlines.append(f"io: Celery baseline not measured ({h.celery_problem})")

    def per_upload_ms(system: str, attr: str) -> float:
        values = [getattr(x, attr) * 1000 / small.count for x in samples[(system, small)]]
        return Stat.of(values).median

    ours_worker = per_upload_ms("ours", "worker_cpu_s")
    ours_total = ours_worker + per_upload_ms("ours", "producer_cpu_s")
    ours_total += per_upload_ms("ours", "redis_cpu_s")
    raw_cpu = per_upload_ms("raw", "worker_cpu_s")
    peak = max(x.max_in_flight for x in samples[("ours", small)])
    lines += [
        "",
        f"Why (at {small.label}): every system here is CPU-bound, not latency-bound — none "
        f"comes near {LIMIT_OBJ_S:.0f} objects/s on 2 shared cores. plantpipe's io worker "
        f"spends {ours_worker:.2f} ms of CPU per upload against {raw_cpu:.2f} ms for the raw "
        f"loop ({ours_worker / raw_cpu:.1f}×), and {ours_total:.2f} ms counting the client and "
        f"Redis; its single process peaked at {peak} S3 requests in flight: it runs out of CPU "
        "before it runs out of S3 slots. Per upload the worker makes three Redis round trips "
        "(artifact state + bytes in one pipeline; the state transition and the blob release as "
        "one batch of scripts; the shared circuit breaker is consulted in Redis only when its "
        "local 250 ms view is not 'closed, no failures'), claims jobs in batches (one Lua call "
        "per poll) and writes no arq result. A py-spy profile of the worker at 64 KiB (taken "
        "separately during development, same setup): ~55% of its CPU is the aiobotocore "
        "`put_object` call itself (endpoint-ruleset resolution ~14%, signing ~9%, aiohttp) — "
        "what the raw loop pays too — and the rest is arq's job bookkeeping (fetch, finish), "
        "the Redis round trips and the event loop. All of it shares 2 cores with the S3 stub, "
        "Redis and the producer. What would close the rest of the gap: carry several uploads "
        "per arq job (the aggregate's upload plan, a client batch) so the per-job bookkeeping "
        "is paid once per batch, and run io processes on cores of their own (the design allows "
        "any number). At 4 MiB plantpipe also hashes every object twice (MD5 for Content-MD5, "
        "SHA-256 for metadata) and moves it through Redis (client SET, worker GET), which "
        "Celery and the raw loop do not.",
    ]
    return "\n".join(lines), headlines
