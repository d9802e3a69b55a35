"""Crashes under load: SIGKILL each role's worker and an inference pool process at random
points, restart them, and every session still ends truthfully with each photo counted once
and every artifact uploaded."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from redis.asyncio import Redis

from pipeline.client import PipelineClient
from pipeline.inference.config import InferenceConfig
from pipeline.inference.pool import InferencePool
from pipeline.runtime.context import ROLE_CONTEXT, RoleContext
from pipeline.runtime.joins import JoinStore
from pipeline.runtime.retry import arq_max_tries
from pipeline.runtime.uploads import upload_job_id
from pipeline.schemas import BlobRef, ChildReport, InferJob, PhotoProgress, RenderJob
from pipeline.settings import Settings
from pipeline.state.blobs import BlobStore
from pipeline.state.ids import (
    child_id,
    infer_holder,
    infer_job_id,
    render_holder,
    render_job_id,
    session_join_id,
)
from pipeline.testing.onnx_fixtures import make_nursery_photo
from pipeline.vision.types import Detection, PhotoAnalysis
from tests.conftest import REDIS_URL, SettingsFactory, WorkerProcess, in_process_worker
from tests.e2e.conftest import Cluster
from tests.faults.conftest import (
    SMALL_TRAYS,
    ClusterFactory,
    Expected,
    FaultReport,
    bucket_objects,
    check_sessions,
    describe_stuck,
    dump_logs,
    forget_jobs,
    pool_pids,
    scaled,
    small_photo,
    wait_until,
    worker_pid,
)
from workers import cpu as cpu_worker
from workers.cpu import CpuContext, aggregate
from workers.gpu import GpuContext, infer_photo

pytestmark = pytest.mark.faults

SESSIONS = 12
PHOTOS = 5
# Short, honest timeouts (brief): a killed job's in-progress key expires timeout + 10 s later.
TIMEOUTS = {"gpu_job_timeout_s": 3, "cpu_job_timeout_s": 5, "io_job_timeout_s": 5}


def encode_jpeg_truncated() -> bytes:
    """A nursery photo as JPEG, cut in half: passes the cheap checks, fails to decode."""
    rgb = make_nursery_photo(640, 480, SMALL_TRAYS, seed=1).rgb
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2]


ROLE_FUNCTIONS = {
    "gpu": ("infer",),
    "pool": ("infer",),
    "cpu": ("render", "aggregate"),
    "io": ("upload",),
}


async def in_flight(redis: Redis, role: str, sids: set[str]) -> list[str]:
    """Job ids of ``role`` that a worker holds right now (arq's in-progress keys)."""
    found: list[str] = []
    for function in ROLE_FUNCTIONS[role]:
        async for raw in redis.scan_iter(match=f"arq:in-progress:{function}:*", count=1000):
            job_id = raw.decode().removeprefix("arq:in-progress:")
            if job_id.split(":")[1] in sids:
                found.append(job_id)
    return found


async def kill_pool_process(cluster: Cluster) -> int:
    """SIGKILL the gpu worker's ONNX Runtime pool process; return its pid."""
    gpu = worker_pid(cluster, "gpu")
    await wait_until(lambda: pool_pids(gpu), 30, "a pool process under the gpu worker")
    victim = pool_pids(gpu)[0]
    os.kill(victim, signal.SIGKILL)
    return victim


async def test_sigkill_every_role_and_a_pool_process_under_load(
    make_fault_cluster: ClusterFactory,
    localstack: str,
    fault_report: FaultReport,
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("PLANTPIPE_FAULTS_SEED", random.randrange(1 << 16)))
    rng = random.Random(seed)
    cluster = make_fault_cluster(**TIMEOUTS)
    await cluster.start("io", "cpu", "gpu")
    inputs: list[list[tuple[bytes, int | None]]] = [
        [small_photo(1000 + s * PHOTOS + i) for i in range(PHOTOS)] for s in range(SESSIONS)
    ]
    # one bad photo: under crashes its session must still end truthfully as "warning"
    inputs[3][2] = (encode_jpeg_truncated(), None)
    events = ["gpu", "cpu", "io", "pool", "pool"]
    rng.shuffle(events)
    log: list[str] = []
    replaced_pools: list[tuple[int, int]] = []

    sids: set[str] = set()
    dead: list[WorkerProcess] = []  # killed workers: their logs explain a stuck session

    async def chaos(started: float) -> None:
        for event in events:
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            # a random point *inside* work: wait until this role holds one of our jobs
            deadline = time.monotonic() + 10
            while not (busy := await in_flight(redis, event, sids)):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.15))
            at = time.monotonic() - started
            holding = f" holding {len(busy)} job(s)" if busy else " (idle)"
            if event == "pool":
                gpu = worker_pid(cluster, "gpu")
                victim = await kill_pool_process(cluster)
                fault_report.pool_kills += 1
                log.append(f"{at:.1f}s pool {victim}{holding}")
                # the worker notices when a job hits the dead process; wait for the rebuild

                survivors: list[int] = []

                def rebuilt(
                    gpu: int = gpu, victim: int = victim, survivors: list[int] = survivors
                ) -> list[int]:
                    survivors[:] = [p for p in pool_pids(gpu) if p != victim]
                    return survivors

                await wait_until(rebuilt, 30, "the inference pool to be rebuilt")
                # what the wait saw: listing the pool again may catch it mid-rebuild (empty)
                replaced_pools.append((victim, survivors[0]))
            else:
                dead.append(cluster.workers[event])
                cluster.kill(event)  # SIGKILL, mid-job most likely
                fault_report.kills[event] += 1
                log.append(f"{at:.1f}s {event}{holding}")
                await cluster.start(event)

    redis = Redis.from_url(REDIS_URL)
    try:
        async with cluster.client() as client:

            async def one(i: int, photos: list[tuple[bytes, int | None]]) -> Expected:
                await asyncio.sleep(i * 0.8)  # load keeps arriving while workers die
                # decode_check=False: the truncated photo is the workers' to refuse
                sid = await client.submit([d for d, _ in photos], decode_check=False)
                sids.add(sid)
                return Expected(sid, [n for _, n in photos])

            started = time.monotonic()
            chaos_task = asyncio.create_task(chaos(started))
            expected = await asyncio.gather(*(one(i, p) for i, p in enumerate(inputs)))
            await chaos_task
            stuck: list[str] = []
            # recovery needs at most job timeout + 10 s after the last kill: 60 s is ample
            settle_by = time.monotonic() + scaled(60)
            for exp in expected:
                try:
                    left = max(1.0, settle_by - time.monotonic())
                    await client.wait(exp.session_id, timeout=left, artifacts=True)
                except TimeoutError:
                    workers = [*dead, *cluster.workers.values()]
                    stuck.append(await describe_stuck(client, exp.session_id, workers))
            wall = time.monotonic() - started
            if stuck:  # keep every worker's log for the post-mortem
                stuck.append(dump_logs(tmp_path, [*dead, *cluster.workers.values()]))
            objects = await bucket_objects(localstack, cluster.settings.s3_bucket)
            check = await check_sessions(client, expected, objects=objects, report=fault_report)
            letters = await client.failed()
    finally:
        await redis.aclose()

    for _ in expected:
        fault_report.count_session(PHOTOS)
    fault_report.notes.append(
        f"crashes (seed {seed}, PLANTPIPE_FAULTS_SEED to replay): {', '.join(log)}; "
        f"{SESSIONS}×{PHOTOS} photos settled in {wall:.1f} s"
    )
    assert stuck == [], f"chaos {log}: sessions not settled:\n" + "\n".join(stuck)
    assert check.problems() == [], f"chaos {log}"
    # the one bad photo, dead-lettered as truncated and not retried for that error: its
    # attempts are 1 plus the crashes that hit it (a gpu worker or pool process killed while
    # it ran, or a slow pool rebuild that ran it out of time); a re-run could record it twice
    assert {(d.function, d.error_code) for d in letters} == {("infer_photo", "truncated")}
    crashes = events.count("gpu") + events.count("pool")
    assert all(1 <= d.attempts <= 1 + crashes for d in letters), [d.attempts for d in letters]
    assert len(replaced_pools) == events.count("pool")


class _Killed(BaseException):
    """The process died here (nothing after this line of the job runs)."""


def job_ctx(client: PipelineClient, role: str = "cpu", **extra: Any) -> dict[str, Any]:
    """What a role's startup puts in an arq ctx (its typed role context), without the
    heartbeat."""
    redis, settings = client.redis, client.settings
    if role == "gpu":
        context: RoleContext = GpuContext.build("gpu", redis, settings, pool=extra.pop("pool"))
    else:
        context = CpuContext.build("cpu", redis, settings, render_slots=asyncio.Semaphore(1))
    return {"redis": redis, "settings": settings, ROLE_CONTEXT: context, **extra}


def die_before(ctx: dict[str, Any], store: str, method: str) -> None:
    """Make the job's process die the first time it calls ``<role context>.<store>.method``."""
    target = getattr(ctx[ROLE_CONTEXT], store)

    async def dead(*args: Any, **kwargs: Any) -> Any:
        raise _Killed(f"{store}.{method}")

    setattr(target, method, dead)


CRASH_POINTS = [
    ("sessions", "set_result"),
    ("blobs", "put_many"),
    ("artifacts", "register"),
    ("sessions", "set_field"),
    ("sessions", "transition"),
    ("joins", "complete"),
]


@pytest.mark.parametrize(("store", "method"), CRASH_POINTS)
async def test_aggregate_rerun_after_a_crash_ends_the_session_once(
    make_settings: SettingsFactory, redis: Redis, store: str, method: str
) -> None:
    """Regression, fixed in d6d6aec (workers/cpu.py ``aggregate``). The bug at 50020d2: the
    callback wrote the results.json blob + artifact record, an ``upload_plan`` field, the
    ``result`` field, then the terminal status, and arq re-runs it when the cpu worker dies
    in between. Dying after ``upload_plan`` but before the status left the session
    ``processing`` with no result until the watchdog deadline (partly fixed in 50020d2);
    dying before ``result`` made the re-run render results.json again (new ``completed_at``
    → new bytes → new blob): the first blob's ``upload:{sid}:results`` holder was never
    released (leaked until blob_ttl_s, 7 days) and the artifact record, registered first
    with HSETNX, kept the first body's size while the second body was uploaded.
    Here the cpu worker dies before each of aggregate's writes in turn; arq's re-run must
    end the session ``completed`` with its result, one results.json blob held for its
    upload, the upload queued, and the artifact record announcing that blob's size."""
    settings = make_settings()
    photo, _ = small_photo(9000)
    analysis = PhotoAnalysis(
        width=640,
        height=480,
        segments=[],
        detections=[
            Detection(cx=10 + i, cy=10, w=24, h=24, confidence=0.9, class_id=0, class_name="p")
            for i in range(3)
        ],
        estimations=[],
        provider="CPUExecutionProvider",
    )
    async with PipelineClient(settings) as client:
        sid = await client.submit([photo])
        await JoinStore(client.redis, settings).report(
            session_join_id(sid),
            child_id(0),
            ChildReport(ok=True, result={"analysis": analysis.model_dump(mode="json")}),
        )
        dying = job_ctx(client)
        die_before(dying, store, method)
        try:
            await aggregate(dying, {"session_id": sid})
            died = False
        except _Killed:
            died = True
        rerun = await aggregate(job_ctx(client), {"session_id": sid})  # arq runs it again
        record = await client.status(sid)
        result = await client.sessions.result(sid)
        results_id = f"{sid}:results"
        held = [
            k.decode().removesuffix(":holders")
            async for k in redis.scan_iter(match=f"{settings.key_prefix}:blob:*:holders")
            if f"upload:{results_id}".encode() in await redis.smembers(k)  # type: ignore[misc]
        ]
        sizes = [int(await redis.strlen(k)) for k in held]
        art = await client.artifacts.get(results_id)
        queued = await redis.exists(f"arq:job:{upload_job_id(results_id)}")
        await forget_jobs(redis, sid)
    where = f"died before {store}.{method}: {died}; re-run {rerun}"
    assert died, f"{where}: aggregate never reached {store}.{method} (a stale crash point)"
    assert record.status == "completed" and result is not None, (
        f"{where}: session {record.status}/{record.stage}, result stored: {result is not None}"
    )
    assert result.total_detected == 3, where
    assert len(held) == 1, f"{where}: {len(held)} results.json blobs held (one leaks)"
    assert art is not None and art.size == sizes[0], f"{where}: record {art} vs blob {sizes}"
    assert queued, f"{where}: results.json upload not queued"


async def test_a_job_out_of_arq_tries_still_reports_its_photo(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """Regression, fixed in d6d6aec (pipeline/jobs.py ``check_crash_loop``; now
    ``JobRun.check_crash_loop`` in pipeline/runtime/job.py). The bug at
    50020d2 (nothing handled arq's own give-up):
    a job whose worker keeps dying under it (a photo that gets the cpu worker OOM-killed in
    ``render_photo``, say) is re-run after each crash; once ``job_try`` passes arq's
    ``max_tries`` (``arq_max_tries`` = 6) arq drops it with "max retries exceeded" without
    running it, and ``handle_failure`` never sees it: no dead letter, the photo never reports
    into the join, the session sits in ``processing`` until the watchdog's deadline (30 min
    by default). The job must give up by itself on the last try arq allows
    (``check_crash_loop`` does): here it is enqueued as arq would start that try
    (``_job_try``) and must end with the session terminal and a dead letter. Since the count
    became the product (a render that cannot be made keeps the photo's analysis), a render
    that gives up leaves its photo ``done`` with a ``crash_loop`` warning, not failed."""
    settings = make_settings(session_deadline_s=300)
    photo, _ = small_photo(9100)
    analysis = PhotoAnalysis(
        width=640, height=480, segments=[], detections=[], estimations=[], provider="CPU"
    )
    async with (
        in_process_worker(cpu_worker.worker_options(settings), settings),
        PipelineClient(settings) as client,
    ):
        sid = await client.submit([photo])
        blob = (await client.sessions.originals(sid))[0]
        job = RenderJob(
            session_id=sid,
            index=0,
            photo_count=1,
            blob=blob,
            analysis=analysis.model_dump(mode="json"),
        )
        await client.redis.enqueue_job(
            "render_photo",
            payload=job.model_dump(mode="json"),
            _job_id=render_job_id(sid, 0),
            _queue_name=client.queues.cpu,
            _job_try=arq_max_tries(settings),
        )
        with contextlib.suppress(TimeoutError):
            await client.wait(sid, timeout=5)
        record = await client.status(sid)
        letters = await client.failed()
        await forget_jobs(redis, sid)
    assert record.photos[0].state == "done" and record.status == "warning", (
        f"photo {record.photos[0].state}, session {record.status} after the last try arq "
        f"allows; {len(letters)} dead letters"
    )
    assert "visualization failed (crash_loop)" in (record.photos[0].reason or "")
    assert [d.function for d in letters] == ["render_photo"]


async def test_a_pool_rebuild_survives_the_job_that_started_it_being_cancelled(
    fault_models: tuple[Path, Path],
) -> None:
    """BUG (pipeline/inference/pool.py ``InferencePool.analyze``/``_rebuild``/``_build``):
    after a pool process dies, the rebuild (spawn, import ONNX Runtime, load, warm up: 1-3 s
    here, far more with CUDA) runs inside whichever job hit ``BrokenProcessPool`` and is
    cancelled with it: by arq's job timeout, or since d6d6aec by the job's own time budget
    (``pipeline.runtime.job.time_budget``). ``_build``'s ``finally: ready.close()`` then runs while
    the new children are still unpickling their initargs (they die with
    ``FileNotFoundError`` in ``SemLock._rebuild``), ``_executor`` stays None, and the next
    job starts a rebuild from scratch under its own budget. Observed in the crash test with
    gpu_job_timeout_s=3 on the loaded 2-core box: every infer job timed out mid-rebuild, the
    gpu worker never recovered and sessions stayed ``processing``. Fix: run the rebuild as
    one shared task shielded from the caller's cancellation (``asyncio.shield``), keep
    ``ready`` open until every child reported, and don't charge the rebuild to the job's
    time budget."""
    seg, det = fault_models
    settings = Settings(
        seg_model_path=seg,
        seg_input_size=320,
        det_model_path=det,
        det_input_size=512,
        intra_op_threads=1,
    )
    pool = InferencePool(InferenceConfig.from_settings(settings))
    await pool.start()
    photo, plants = small_photo(9200)
    try:
        first = (await pool.analyze(photo)).analysis.total_detected
        os.kill(pool.pids[0], signal.SIGKILL)
        await asyncio.sleep(1.0)  # the executor notices the dead process
        # the job that finds the dead process runs out of time during the rebuild
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await pool.analyze(photo)
        # 4 s on an idle machine is ample for a rebuild (~1.7 s), had it been allowed to
        # finish; a loaded machine stretches both (scaled)
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: pool.started, 4.0, "the rebuilt pool")
        rebuilt = pool.started
        # the next job only needs an analysis' time (~0.2 s), not a whole rebuild
        answer_s = scaled(1.0)
        outcome = f"no answer in {answer_s:.1f} s (the pool is being rebuilt from scratch)"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(answer_s):
                outcome = str((await pool.analyze(photo)).analysis.total_detected)
    finally:
        await pool.close()
    assert first == plants
    assert rebuilt, "4 s (load-scaled) after the cancelled rebuild the pool has no executor"
    assert outcome == str(plants), outcome


EMPTY_ANALYSIS = PhotoAnalysis(
    width=640, height=480, segments=[], detections=[], estimations=[], provider="CPU"
)


async def photo_zero_done(client: PipelineClient, sid: str) -> BlobRef:
    """Photo 0 of session ``sid`` went all the way — analysed, rendered and reported, its
    original uploaded — so every hold on its bytes is let go. Returns its blob."""
    blob = (await client.sessions.originals(sid))[0]
    await client.sessions.update_photo(sid, PhotoProgress(index=0, state="done", detected=0))
    await JoinStore(client.redis, client.settings).report(
        session_join_id(sid),
        child_id(0),
        ChildReport(ok=True, result={"analysis": EMPTY_ANALYSIS.model_dump(mode="json")}),
    )
    blobs = BlobStore(client.redis, client.settings)
    for holder in (infer_holder(sid, 0), render_holder(sid, 0), f"upload:{sid}:0:original"):
        await blobs.release(blob, holder)
    return blob


async def test_an_infer_rerun_after_its_photo_is_done_does_not_fail_it(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """BUG (workers/gpu.py ``infer_photo``): arq re-runs an infer job whose worker died after
    the job's work was done (its blob holder released, render_photo enqueued) but before arq
    recorded the job as finished. By the time the re-run starts, render_photo has reported
    the photo and the original's upload has released the blob, so the blob is gone. The
    re-run only skips when the *whole* session is aggregated; otherwise it first sets the
    photo back to ``processing``, then fails on ``BlobMissing`` (permanent): a spurious
    ``infer_photo blob_missing`` dead letter, and the session record shows the photo
    ``failed`` although the join counted it ``done`` (seen in the crash test: photos
    ['processing', 'processing', 'done', 'failed', 'done']). Fix: at the top of
    infer_photo, skip when this photo's child already reported (``HEXISTS`` on the join's
    results) or its render job exists; treat ``BlobMissing`` on a re-run (job_try > 1) as
    "already done" when the thumbnail artifact is registered."""
    settings = make_settings()
    photos = [small_photo(9300), small_photo(9301)]
    async with PipelineClient(settings) as client:
        sid = await client.submit([d for d, _ in photos])
        blob = await photo_zero_done(client, sid)
        # … and arq re-runs its infer job (the worker died before arq wrote it off)
        ctx = job_ctx(client, "gpu", pool=None, job_try=2)
        ctx["job_id"] = infer_job_id(sid, 0)
        job = InferJob(session_id=sid, index=0, photo_count=2, blob=blob, mime="image/png")
        outcome = await infer_photo(ctx, job.model_dump(mode="json"))
        record = await client.status(sid)
        letters = await client.failed()
        await forget_jobs(redis, sid)
    assert record.photos[0].state == "done", f"photo 0 now {record.photos[0]} after {outcome}"
    assert [(d.function, d.error_code) for d in letters] == []


async def test_a_render_rerun_after_its_photo_reported_does_not_fail_it(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """A render_photo whose work was done (outputs handed over, photo reported into the join,
    its hold on the photo let go) is run again because arq's record of its end was never
    written — Redis was full at ``maxmemory`` (seen in the fault suite: a spurious
    ``render_photo blob_missing`` dead letter), or the worker died. The re-run must see the
    photo reported and end there, not fail on the photo's bytes being gone."""
    settings = make_settings()
    photos = [small_photo(9310), small_photo(9311)]
    async with PipelineClient(settings) as client:
        sid = await client.submit([d for d, _ in photos])
        blob = await photo_zero_done(client, sid)
        # … and arq runs it again
        ctx = job_ctx(client, "cpu", job_try=2)
        ctx["job_id"] = render_job_id(sid, 0)
        job = RenderJob(
            session_id=sid,
            index=0,
            photo_count=2,
            blob=blob,
            analysis=EMPTY_ANALYSIS.model_dump(mode="json"),
        )
        outcome = await cpu_worker.render_photo(ctx, job.model_dump(mode="json"))
        record = await client.status(sid)
        letters = await client.failed()
        await forget_jobs(redis, sid)
    assert outcome.get("skipped") is True, outcome
    assert record.photos[0].state == "done", f"photo 0 now {record.photos[0]} after {outcome}"
    assert [(d.function, d.error_code) for d in letters] == []
