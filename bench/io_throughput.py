"""Section 1: S3 upload throughput of the io role against a 50 ms S3, at concurrency 50.

Three ways to put N objects into the S3 stub (a separate process, 50 ms per request):

* **plantpipe**: ``arq workers.io.WorkerSettings`` processes fed from this process, either
  one ``PipelineClient.upload`` call per object from up to 32 tasks at once (calls made in
  the same turn of the event loop share io jobs) or ``upload_many`` in batches of
  ``io_batch_max`` (one ``upload_batch`` job per batch), with one io process and with two;
  time from the first upload call to the return of the last ``handle.wait()`` (the client
  stores each payload as a blob in Redis, the io worker copies it to S3 under its semaphore
  of 50 per process and records the artifact's state);
* **raw aioboto3**: one asyncio loop, ``asyncio.Semaphore(50)`` around ``put_object`` on one
  plain aioboto3 client (the connection, timeout and retry settings of plantpipe's, the SDK's
  defaults otherwise) — what a developer writes with the SDK, the baseline of the targets;
* **plantpipe's S3 client in a loop**: ``S3ObjectStore.put`` (its semaphore of 50) called
  straight from one asyncio loop — the io worker's S3 requests, byte for byte, without Redis
  or arq: the gap to it is what the job system costs;
* **Celery gevent** (the original design): ``celery worker --pool=gevent --concurrency=50``
  running boto3 ``put_object``, the bytes carried in the task arguments; time from the first
  ``apply_async`` to the group's results.

The physical limit is concurrency / latency = 50 / 0.05 s = 1000 objects/s.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import aioboto3
from botocore.config import Config

from bench.cluster import celery_produce, start_celery_worker
from bench.common import Stat
from bench.harness import Harness, Proc, SectionOutput, settings_for
from pipeline.client import PipelineClient, UploadHandle
from pipeline.schemas import UploadItem
from pipeline.storage.s3 import S3ObjectStore

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
    stub_cpu_s: float = 0.0
    max_in_flight: int = 0
    #: True where the worker is the producer (the raw loop): its CPU is counted once in totals
    same_process: bool = False


async def measured(h: Harness, run: Awaitable[Sample]) -> Sample:
    """Run one repetition; add the Redis server's and the S3 stub's CPU and the stub's peak
    in-flight count."""
    await h.stub_reset()
    redis0, stub0 = await h.redis_cpu_seconds(), h.stub.cpu_seconds()
    sample = await run
    redis_cpu, stub_cpu = await h.redis_cpu_seconds() - redis0, h.stub.cpu_seconds() - stub0
    stats = await h.stub_stats()
    peak = stats.get("max_in_flight", 0)
    return replace(
        sample,
        redis_cpu_s=redis_cpu,
        stub_cpu_s=stub_cpu,
        max_in_flight=int(peak) if isinstance(peak, int) else 0,
    )


def payloads(count: int, size: int) -> list[bytes]:
    """Distinct random payloads: blobs are content-addressed, equal bytes would be stored once."""
    if size <= 256 * KIB:
        return [os.urandom(size) for _ in range(count)]
    base = os.urandom(size)
    return [i.to_bytes(8, "big") + base[8:] for i in range(count)]


def s3_config() -> Config:
    """The raw loop's botocore settings: the connection, timeout and retry settings of
    plantpipe's S3ObjectStore (pipeline/storage/s3.py), the SDK's defaults otherwise."""
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
    h: Harness,
    client: PipelineClient,
    workers: list[Proc],
    keys: list[str],
    data: list[bytes],
    *,
    batch: int = 1,
) -> Sample:
    """``batch`` 1: one ``upload`` call per object, up to 32 calls at once (those of one turn
    of the event loop share io jobs); more: ``upload_many`` of that many objects per call."""
    enqueue_slots = asyncio.Semaphore(max(1, 32 // batch))
    wait_slots = asyncio.Semaphore(256)

    async def some(start: int) -> list[str]:
        items = [
            UploadItem(key=keys[i], data=data[i], content_type=CONTENT_TYPE)
            for i in range(start, min(start + batch, len(keys)))
        ]
        async with enqueue_slots:
            if batch == 1:
                handles = [
                    await client.upload(items[0].key, items[0].data, content_type=CONTENT_TYPE)
                ]
            else:
                handles = await client.upload_many(items)

        async def wait(handle: UploadHandle) -> str:
            async with wait_slots:
                await handle.wait()
            return handle.artifact_id

        return await asyncio.gather(*(wait(handle) for handle in handles))

    def worker_cpu() -> float:
        return sum(w.cpu_seconds() for w in workers)

    cpu_w, cpu_p = worker_cpu(), time.process_time()
    t0 = time.perf_counter()
    async with asyncio.timeout(REP_TIMEOUT_S):
        groups = await asyncio.gather(*(some(i) for i in range(0, len(keys), batch)))
    wall = time.perf_counter() - t0
    h.track(*(aid for group in groups for aid in group))
    return Sample(wall, worker_cpu() - cpu_w, time.process_time() - cpu_p)


# --------------------------------------------------------------------------- raw aioboto3


async def in_this_loop(count: int, one: Callable[[int], Awaitable[None]]) -> Sample:
    """``one(i)`` for every object at once in this process's loop, which is its own worker."""
    cpu = time.process_time()
    t0 = time.perf_counter()
    async with asyncio.timeout(REP_TIMEOUT_S):
        await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - t0
    used = time.process_time() - cpu
    return Sample(wall, used, used, same_process=True)


async def raw_rep(s3: Any, bucket: str, keys: list[str], data: list[bytes]) -> Sample:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with slots:
            await s3.put_object(Bucket=bucket, Key=keys[i], Body=data[i], ContentType=CONTENT_TYPE)

    return await in_this_loop(len(keys), one)


# --------------------------------------------------------------------------- plantpipe's S3 client


async def store_rep(store: S3ObjectStore, keys: list[str], data: list[bytes]) -> Sample:
    """The io worker's S3 requests without the job system: ``S3ObjectStore.put`` (which hashes
    the body once, as the client does for a blob, and holds the semaphore of 50)."""

    async def one(i: int) -> None:
        await store.put(keys[i], data[i], content_type=CONTENT_TYPE)

    return await in_this_loop(len(keys), one)


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
    stub_cpu = Stat.of([s.stub_cpu_s * 1000 / case.count for s in samples])
    peak = max(s.max_in_flight for s in samples)
    row = (
        f"| {system} | {case.label} × {case.count} | {obj.fmt(0)} | {mib.fmt(1)} | "
        f"{frac.fmt(2)} | {worker_cpu.fmt(2)} | {producer_cpu.fmt(2)} | {redis_cpu.fmt(2)} | "
        f"{stub_cpu.fmt(2)} | {peak} |"
    )
    return row, obj.median


async def heartbeats(h: Harness, prefix: str, role: str) -> int:
    return len([k async for k in h.redis.scan_iter(match=f"{prefix}:worker:{role}:*")])


SYSTEMS: Final = {
    "ours": "plantpipe, `upload` per object from 32 tasks (calls made at once share io jobs), "
    "1 io process",
    "batch": "plantpipe, `upload_many` of 50 (one `upload_batch` job each), 1 io process",
    "raw": "raw aioboto3 loop, `Semaphore(50)` (plain aioboto3 client)",
    "store": "plantpipe's S3 client in a loop (`S3ObjectStore.put`: the same S3 requests, "
    "no Redis, no arq)",
    "celery": "Celery `--pool=gevent --concurrency=50` + boto3 (original design)",
    "batch2": "plantpipe, `upload_many` of 50, 2 io processes (50 S3 slots each)",
    "raw2": "raw aioboto3 loop, measured alongside the 2-process rows",
}


async def measure(
    h: Harness,
    cases: list[Case],
    reps: int,
    runs: dict[str, Callable[[list[str], list[bytes], Case], Awaitable[Sample]]],
    samples: dict[tuple[str, Case], list[Sample]],
) -> None:
    """Each case: ``reps`` rounds of every system in turn (interleaved: drift hits all alike)."""
    for case in cases:
        keys = [f"io-{case.tag}/{i}" for i in range(case.count)]
        data = payloads(case.count, case.size)
        for _rep in range(reps):
            for system, one in runs.items():
                sample = await measured(h, one(keys, data, case))
                samples.setdefault((system, case), []).append(sample)
        del data


async def run(h: Harness) -> SectionOutput:
    reps = 5
    cases = (
        [Case(300, 64 * KIB), Case(30, 4 * MIB)]
        if h.quick
        else [Case(1000, 64 * KIB), Case(50, 4 * MIB)]
    )
    await h.stub_latency(0)
    prefix = h.prefix("io")
    settings = settings_for(h, prefix)
    batch = settings.io_batch_max

    # plantpipe's io worker
    worker = h.arq_worker("io-worker", "workers.io.WorkerSettings", h.env(prefix))
    await h.wait_for_heartbeat(prefix, "io", worker)
    workers = [worker]
    client = PipelineClient(settings)
    await client.connect()

    # Celery's gevent worker (the original design), if its venv is there
    queue = f"bench-{h.run_id}-celery-io"
    celery_worker = await start_celery_worker(h, queue)
    if celery_worker is not None:
        await celery_produce(h, queue, "ensure-bucket", timeout=120)

    session = aioboto3.Session()
    samples: dict[tuple[str, Case], list[Sample]] = {}
    # plantpipe's own S3 client in this process, as the io worker builds it (the stub takes
    # any credentials; the worker processes get the same from h.env)
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")):
        os.environ.setdefault(name, value)
    store = S3ObjectStore(settings)
    await store.start()
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

            def ours(n: int) -> Callable[[list[str], list[bytes], Case], Awaitable[Sample]]:
                return lambda k, d, _c: ours_rep(h, client, workers, k, d, batch=n)

            def raw(k: list[str], d: list[bytes], _c: Case) -> Awaitable[Sample]:
                return raw_rep(s3, prefix, k, d)

            def celery(_k: list[str], _d: list[bytes], c: Case) -> Awaitable[Sample]:
                assert celery_worker is not None
                return celery_rep(h, queue, celery_worker, c)

            def own_client(k: list[str], d: list[bytes], _c: Case) -> Awaitable[Sample]:
                return store_rep(store, k, d)

            runs = {"ours": ours(1), "batch": ours(batch), "raw": raw, "store": own_client}
            if celery_worker is not None:
                runs["celery"] = celery
            # Warm-up, not counted: connections, the worker's first jobs, Celery's imports.
            await measure(h, [Case(100, 64 * KIB)], 1, runs, {})
            await measure(h, cases, reps, runs, samples)
            # a second io process: each has its own event loop, client and 50 S3 slots
            workers.append(h.arq_worker("io-worker-2", "workers.io.WorkerSettings", h.env(prefix)))
            await h.wait_until(
                lambda: _at_least(heartbeats(h, prefix, "io"), 2), "two io heartbeats", 60, workers
            )
            runs2 = {"batch2": ours(batch), "raw2": raw}
            await measure(h, [Case(100, 64 * KIB)], 1, runs2, {})
            await measure(h, cases, reps, runs2, samples)
    finally:
        await client.close()
        await store.close()
        for w in workers:
            h.stop(w)
        if celery_worker is not None:
            h.stop(celery_worker)
        await h.stub_latency(0)
        await h.stub_reset(store=True)
    return report(h, cases, samples, batch)


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


def report(
    h: Harness, cases: list[Case], samples: dict[tuple[str, Case], list[Sample]], batch: int
) -> SectionOutput:
    lines = [
        f"5 repetitions per cell, interleaved; S3 stub in its own process, "
        f"{LATENCY_MS:.0f} ms per request; concurrency {CONCURRENCY} per process; physical "
        f"limit of one process {CONCURRENCY} / {LATENCY_MS / 1000:.2f} s = "
        f"**{LIMIT_OBJ_S:.0f} objects/s** (= {LIMIT_OBJ_S * 64 / 1024:.1f} MiB/s at 64 KiB, "
        f'{LIMIT_OBJ_S * 4:.0f} MiB/s at 4 MiB); "of limit" is objects/s ÷ 1000 (the same '
        "fraction for MiB/s). The 2-process rows ran after the others, with the raw loop "
        "measured again beside them.",
        "",
        "| system | objects | objects/s | MiB/s | of limit | worker CPU ms / upload "
        "| producer CPU ms / upload | Redis CPU ms / upload | S3 stub CPU ms / upload "
        "| S3 requests in flight, max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    medians: dict[tuple[str, Case], float] = {}
    for case in cases:
        for system in SYSTEMS:
            if (system, case) in samples:
                row, median = _row(SYSTEMS[system], case, samples[(system, case)])
                lines.append(row)
                medians[(system, case)] = median
    small, large = cases[0], cases[-1]

    def ratio(a: str, b: str, case: Case) -> float:
        return medians[(a, case)] / medians[(b, case)]

    def verdict(value: float, target: float) -> str:
        return "met" if value >= target else "**NOT met**"

    targets = [
        ("batch", "raw", small, 0.95, f"`upload_many`, 1 process, {small.label}"),
        ("batch", "raw", large, 0.8, f"`upload_many`, 1 process, {large.label}"),
        ("batch2", "raw2", small, 0.95, f"`upload_many`, 2 processes, {small.label}"),
        ("batch2", "raw2", large, 0.8, f"`upload_many`, 2 processes, {large.label}"),
        ("ours", "raw", small, 0.95, f"`upload` per object, 1 process, {small.label}"),
    ]
    headlines: list[str] = []
    met: list[str] = []
    for a, b, case, target, label in targets:
        value = ratio(a, b, case)
        met.append(
            f"{label}: {value:.2f}× raw aioboto3 (target ≥ {target}×: {verdict(value, target)})"
        )
        headlines.append(
            f"io {label}: plantpipe {medians[(a, case)]:.0f} obj/s = {value:.2f}× raw aioboto3 "
            f"({medians[(b, case)]:.0f} obj/s; target ≥ {target}×: {verdict(value, target)})"
        )
    if ("celery", small) in medians:
        vs_celery = ratio("batch", "celery", small)
        met.append(
            f"`upload_many`, 1 process, {small.label}: {vs_celery:.2f}× Celery gevent "
            f"(target ≥ 3×: {verdict(vs_celery, 3)})"
        )
        headlines.append(
            f"io {small.label}: plantpipe `upload_many` = {vs_celery:.2f}× Celery gevent "
            f"({medians[('celery', small)]:.0f} obj/s; target ≥ 3×: {verdict(vs_celery, 3)})"
        )
    else:
        met.append(f"Celery not measured: {h.celery_problem}")
        headlines.append(f"io: Celery baseline not measured ({h.celery_problem})")

    def per_upload_ms(system: str, attr: str, case: Case) -> float:
        values = [getattr(x, attr) * 1000 / case.count for x in samples[(system, case)]]
        return Stat.of(values).median

    def total_ms(system: str, case: Case) -> float:
        """Worker + producer + Redis CPU per upload (the raw loop's process counted once)."""
        once = samples[(system, case)][0].same_process
        parts = (
            ("worker_cpu_s", "redis_cpu_s")
            if once
            else ("worker_cpu_s", "producer_cpu_s", "redis_cpu_s")
        )
        return sum(per_upload_ms(system, a, case) for a in parts)

    def own(a: str, case: Case) -> str:
        return f"{ratio(a, 'store', case):.2f}×"

    lines += [
        "",
        "Worker CPU = user + sys of the worker process(es) from `/proc` over the repetition "
        "(the arq io worker(s); the Celery worker; for the two loops the benchmark process, "
        "which is its own worker). Producer CPU = the side that submits: `PipelineClient` "
        "calls + `handle.wait()` in the benchmark process for plantpipe, "
        "`group(...).apply_async()` + `GroupResult.get()` in a producer process for Celery. "
        "Redis CPU = the Redis server's user + sys (`INFO cpu`) over the repetition (a shared "
        "server: other clients count too). S3 stub CPU = the stub process's user + sys: S3's "
        "own work, which on this machine competes for the same two cores. In flight = the "
        "stub's highest count of concurrent S3 requests (below 50: the process ran out of CPU "
        "before it ran out of S3 slots).",
        "",
        "Payloads are distinct random bytes. Each system's body is checked once on S3's side "
        "(the stub verifies, as S3 does, a signed payload's `x-amz-content-sha256` and an "
        "`x-amz-checksum-sha256`). plantpipe: the client hashes each payload once (SHA-256: "
        "its blob id) and stores it once in Redis; the job carries a reference; the worker "
        "sends that SHA-256 as `x-amz-checksum-sha256` under a signature that covers it — no "
        "second hash of the body — consults the shared circuit breaker and records the "
        "artifact's state; a payload above 64 KiB is read from Redis when its upload goes, "
        "under the io process's byte budget (`PLANTPIPE_IO_MEMORY_MB`, 256). An "
        f"`upload_batch` job carries up to {batch} uploads and about "
        "`PLANTPIPE_IO_BATCH_MAX_BYTES` (16 MiB: 4 MiB objects go 4 to a job, each job queued "
        "as soon as its blobs are stored): one claim, one payload, one pipeline of state "
        "reads and one Lua batch of records for all of them, while each upload keeps its own "
        "state, retries and dead letter. plantpipe's S3 client differs from a plain aioboto3 "
        "client in two ways (`pipeline/storage/sdk_tuning.py`): botocore's endpoint cache "
        "hits across object keys (the ruleset's unread `Key` parameter dropped, as botocore "
        "does from a later release on), and a body under 2 MiB is sent with its headers, not "
        "behind `Expect: 100-continue` (a round trip less per request; from 2 MiB on it still "
        "waits, as the AWS SDK for Go v2 does). The raw loop is a plain aioboto3 client (the "
        "SDK's defaults: the body's SHA-256 signed, `Expect: 100-continue` on every body); "
        "the row `S3ObjectStore.put` in a loop is plantpipe's own client doing the worker's "
        "requests without Redis or arq. Celery: the task arguments carry the bytes (kombu "
        "JSON → base64, as the original's `file_bytes` argument did); boto3 `put_object` "
        "with the same connection settings (50 pooled connections, no SDK retries, checksums "
        "when required).",
        "",
        "Targets: " + "; ".join(met) + ".",
        "",
        "Against plantpipe's own S3 client in a loop (what the job system costs: the bytes' "
        "trip through Redis, the artifact's state, arq): `upload_many` "
        f"{own('batch', small)} at {small.label} and {own('batch', large)} at {large.label}; "
        f"`upload` per object {own('ours', small)} at {small.label}.",
        "",
        f"Where the time goes (CPU per upload, worker + producer + Redis, at {small.label}): "
        f"`upload` per object {total_ms('ours', small):.2f} ms, `upload_many` "
        f"{total_ms('batch', small):.2f} ms, plantpipe's client in a loop "
        f"{total_ms('store', small):.2f} ms, raw loop {total_ms('raw', small):.2f} ms; at "
        f"{large.label}: `upload_many` {total_ms('batch', large):.2f} ms (Redis "
        f"{per_upload_ms('batch', 'redis_cpu_s', large):.2f} ms of it), plantpipe's client in "
        f"a loop {total_ms('store', large):.2f} ms, raw loop {total_ms('raw', large):.2f} ms. "
        "The S3 stub, Redis, the producer and the workers share 2 cores. With 50 requests in "
        "flight, a request spends much of its time waiting for its turn on a busy event loop "
        "(the client's and the stub's), not in S3's 50 ms: `Expect: 100-continue` adds one "
        "more turn on both sides per request, which is why leaving it out for small bodies "
        "pays more than the CPU it saves. plantpipe pays, per object, what its own client pays "
        "plus the bytes' trip through Redis (client SET, worker GET — at 4 MiB the largest "
        "cost after the request itself), the artifact's state (read and record) and arq's "
        "job bookkeeping (claim, fetch, finish), once per io job: `upload_many` and `upload` "
        "calls made at once share it. A second io process adds an event loop and 50 S3 "
        "slots, which pays only where one process's CPU is the limit (its rows show whether "
        "that holds on this machine). A profile of one io worker under `upload_many` load, "
        "split by where its CPU goes (the SDK and HTTP against plantpipe's own code, arq and "
        "the Redis client), is in [IO_PROFILE.md](IO_PROFILE.md) "
        "(`python -m bench.io_profile`), at 64 KiB and at 4 MiB.",
    ]
    return "\n".join(lines), headlines
