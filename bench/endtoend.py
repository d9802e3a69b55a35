"""Section 6: end to end with 12 MP photos.

Real ``arq workers.{io,cpu,gpu}.WorkerSettings`` processes (:func:`bench.cluster.start_cluster`),
the S3 stub at 0 ms, 4000×3000 JPEGs. Each repetition submits K one-photo sessions at once and
waits until every session is terminal (and then until every artifact is uploaded);
photos/min = K ÷ wall. The model time of a photo is ``segment + detect`` of its
``timings_ms`` (the in-pool timings of ``PhotoAnalyzer.analyze``); the share of wall time that
is not model inference is 1 − Σ model time ÷ wall (one inference process, so model calls do
not overlap).
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

from bench.cluster import Cluster, default_models, fixture_photo, jpeg, scene_photo, start_cluster
from bench.common import Stat
from bench.harness import Harness, SectionOutput, settings_for
from pipeline.client import PipelineClient
from pipeline.schemas import SessionResult
from pipeline.settings import Settings


@dataclass
class E2ERep:
    wall_terminal_s: float
    wall_artifacts_s: float
    results: list[SessionResult]
    job_s: dict[str, list[float]]
    """Wall seconds of each job (start → finish, from arq's results) by function."""


async def job_seconds(
    client: PipelineClient, photos: list[tuple[str, int]]
) -> dict[str, list[float]]:
    """Wall seconds (start → finish, as arq recorded them) of each photo's jobs and of each
    session's aggregate, by function."""
    from arq.jobs import Job

    from pipeline.runtime.serialization import deserialize
    from pipeline.state.ids import aggregate_job_id, infer_job_id, render_job_id

    found: dict[str, list[float]] = {}
    wanted: list[tuple[str, str, str]] = []
    for sid, index in photos:
        wanted.append(("infer_photo (gpu)", infer_job_id(sid, index), client.queues.gpu))
        wanted.append(("render_photo (cpu)", render_job_id(sid, index), client.queues.cpu))
    for sid in dict.fromkeys(sid for sid, _ in photos):
        wanted.append(("aggregate (cpu)", aggregate_job_id(sid), client.queues.cpu))
    for name, job_id, queue in wanted:
        job = Job(job_id, client.redis, _queue_name=queue, _deserializer=deserialize)
        info = await job.result_info()
        if info is not None:
            seconds = (info.finish_time - info.start_time).total_seconds()
            found.setdefault(name, []).append(seconds)
    return found


async def e2e_rep(
    client: PipelineClient, cluster: Cluster, photos: list[bytes], timeout: float
) -> E2ERep:
    t0 = time.perf_counter()
    sids = [await client.submit([p]) for p in photos]
    try:
        async with asyncio.timeout(timeout):
            records = await asyncio.gather(*(client.wait(s) for s in sids))
            terminal = time.perf_counter() - t0
            await asyncio.gather(*(client.wait(s, artifacts=True) for s in sids))
            artifacts = time.perf_counter() - t0
    except TimeoutError:
        cluster.check()
        states = [await client.status(s) for s in sids]
        raise RuntimeError(
            f"sessions not terminal after {timeout:.0f} s: "
            + ", ".join(f"{r.session_id[:8]} {r.status}/{r.stage}" for r in states)
        ) from None
    bad = [r for r in records if r.status != "completed"]
    if bad:
        raise RuntimeError(f"session {bad[0].session_id} ended {bad[0].status}: {bad[0].reason}")
    results = [await client.result(s) for s in sids]
    return E2ERep(terminal, artifacts, results, await job_seconds(client, [(s, 0) for s in sids]))


@dataclass
class BatchRep:
    """One session of many photos: walls, worker CPU, the result and each job's wall."""

    wall_terminal_s: float
    wall_artifacts_s: float
    cpu_s: float
    """CPU seconds of the io, cpu and gpu workers (with their pool processes) meanwhile."""
    result: SessionResult
    job_s: dict[str, list[float]]


async def batch_rep(
    client: PipelineClient, cluster: Cluster, photos: list[bytes], timeout: float
) -> BatchRep:
    cpu0 = sum(p.cpu_seconds() for p in cluster.procs)
    t0 = time.perf_counter()
    sid = await client.submit(photos)
    try:
        async with asyncio.timeout(timeout):
            await client.wait(sid)
            terminal = time.perf_counter() - t0
            await client.wait(sid, artifacts=True)
            artifacts = time.perf_counter() - t0
    except TimeoutError:
        cluster.check()
        record = await client.status(sid)
        raise RuntimeError(
            f"session not terminal after {timeout:.0f} s: {record.status}/{record.stage}"
        ) from None
    cpu = sum(p.cpu_seconds() for p in cluster.procs) - cpu0
    result = await client.result(sid)
    jobs = await job_seconds(client, [(sid, i) for i in range(len(photos))])
    return BatchRep(terminal, artifacts, cpu, result, jobs)


SCENE_CACHE: Final = Path(tempfile.gettempdir()) / "plantpipe-bench-scenes"


def batch_photos(
    make: Callable[[int, int, int], bytes], width: int, height: int, n: int
) -> list[bytes]:
    """``n`` distinct JPEGs: a few generated scenes (cached on disk: a 12 MP scene takes
    ~15 s to generate), each re-encoded at slightly different JPEG qualities."""
    scenes = max(1, min(n, 5))
    photos: list[bytes] = []
    for seed in range(scenes):
        path = SCENE_CACHE / f"{make.__name__}-{width}x{height}-{seed}.png"
        if path.is_file():
            rgb = np.asarray(Image.open(path).convert("RGB"))
        else:
            rgb = np.asarray(Image.open(io.BytesIO(make(width, height, seed))).convert("RGB"))
            SCENE_CACHE.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(path, compress_level=1)
        photos.append(jpeg(rgb, 90))
        photos.extend(jpeg(rgb, 90 - k) for k in range(1, -(-n // scenes)))
    return photos[:n]


def _per_photo_timings(results: list[SessionResult]) -> dict[str, list[float]]:
    stages: dict[str, list[float]] = {}
    for r in results:
        for p in r.photos:
            for k, v in p.timings_ms.items():
                stages.setdefault(k, []).append(v)
    return stages


def _timings_table(stages: dict[str, list[float]]) -> list[str]:
    shown = {k: v for k, v in stages.items() if not k.endswith("_cpu")}
    return [
        "| " + " | ".join(shown) + " |",
        "|" + "---|" * len(shown),
        "| " + " | ".join(f"{statistics.median(v):.0f}" for v in shown.values()) + " |",
    ]


async def run(h: Harness) -> SectionOutput:
    reps = 5
    batch = 5 if h.quick else 20
    width, height = (2000, 1500) if h.quick else (4000, 3000)
    models = default_models(h)
    make = scene_photo if models.bundled else fixture_photo
    photos = await asyncio.to_thread(batch_photos, make, width, height, batch)
    await h.stub_latency(0)
    prefix = h.prefix("e2e")
    cluster = await start_cluster(h, prefix, dict(models.env))  # default settings
    client = PipelineClient(settings_for(h, prefix))
    await client.connect()
    samples: list[E2ERep] = []
    try:
        # Warm-up (models, pools, kernels, connections) with a small photo: not counted.
        small = await asyncio.to_thread(make, 640, 480, 99)
        warm = await e2e_rep(client, cluster, [small], timeout=300)
        h.track(*(r.session_id for r in warm.results))
        many = await batch_rep(client, cluster, photos, timeout=900)
        h.track(many.result.session_id)
        for i in range(reps):
            rep = await e2e_rep(client, cluster, [photos[i % len(photos)]], timeout=300)
            h.track(*(r.session_id for r in rep.results))
            samples.append(rep)
    finally:
        await client.close()
        h.stop(*cluster.procs)
        await h.stub_reset(store=True)

    d = Settings()  # the defaults the workers resolved (same machine, same environment)
    doc = many.result
    failed = sum(1 for p in doc.photos if p.status == "failed")
    warned = sum(1 for p in doc.photos if p.status == "done" and p.warnings)
    batch_min = len(photos) / many.wall_terminal_s * 60
    batch_min_art = len(photos) / many.wall_artifacts_s * 60
    stages = _per_photo_timings([doc])
    inference_cpu_s = sum(stages.get("inference_cpu", [0.0])) / 1000
    share = 1 - inference_cpu_s / many.cpu_s if many.cpu_s > 0 else float("nan")
    render_s = many.job_s.get("render_photo (cpu)", [float("nan")])
    infer_s = many.job_s.get("infer_photo (gpu)", [float("nan")])

    per_min = Stat.of([1 / s.wall_terminal_s * 60 for s in samples])
    single_stages = _per_photo_timings([r for s in samples for r in s.results])
    single_jobs: dict[str, list[float]] = {}
    for s in samples:
        for name, values in s.job_s.items():
            single_jobs.setdefault(name, []).extend(values)
    provider = doc.photos[0].provider
    mib = statistics.median(len(p) for p in photos) / 2**20
    source = (
        "synthetic scenes (`pipeline.synth.generate_scene`, 5 scenes each re-encoded at JPEG "
        "quality 90, 89, 88, 87 so that every photo's bytes differ)"
        if models.bundled
        else "fixture nursery photos (`make_nursery_photo`)"
    )
    lines = [
        f"**One session of {len(photos)} photos** of {width}×{height} JPEG (median "
        f"{mib:.1f} MiB), {source}; models: {models.label}; provider {provider}; one io, cpu "
        f"and gpu worker each with **default settings** (gpu: {d.pool_processes} inference "
        f"process(es) × {d.intra_op_threads or 'default'} thread(s), {d.gpu_max_jobs} jobs; "
        f"cpu: {d.cpu_concurrency} renders at once, AVIF speed {d.avif_speed} at most "
        f"{d.visualization_max_px} px); S3 stub at 0 ms; after a small warm-up photo.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| photos/min, submit → session terminal | {batch_min:.1f} |",
        f"| photos/min, submit → every artifact uploaded | {batch_min_art:.1f} |",
        f"| photos failed / done with a warning | {failed} / {warned} |",
        f"| session status | {doc.status} |",
        f"| detected + estimated per photo (median) | "
        f"{statistics.median(p.detected + p.estimated for p in doc.photos):.0f} |",
        f"| render_photo job per photo (s, median; min–max) | {statistics.median(render_s):.2f}"
        f" ({min(render_s):.2f}–{max(render_s):.2f}) |",
        f"| infer_photo job per photo (s, median) | {statistics.median(infer_s):.2f} |",
        f"| band estimation per photo (ms, median) | "
        f"{statistics.median(stages.get('estimate', [float('nan')])):.0f} |",
        f"| worker CPU per photo (s: io + cpu + gpu workers and the inference process) | "
        f"{many.cpu_s / len(photos):.2f} |",
        f"| model inference CPU per photo (s: segment + detect stages) | "
        f"{inference_cpu_s / len(photos):.2f} |",
        f"| **non-inference share of per-photo CPU** | {share:.2f} |",
        "",
        "Per-photo in-pool timings of that session (ms, median over its photos):",
        "",
        *_timings_table(stages),
        "",
        "Job wall times (s, median; start → finish as arq recorded them): "
        + ", ".join(f"{name} {statistics.median(v):.2f}" for name, v in many.job_s.items())
        + ".",
        "",
        "CPU: `utime + stime` of each worker process and its descendants (the inference pool) "
        "over the session, from /proc; not Redis' and not the S3 stub's. Model inference CPU is "
        "the inference process's CPU time across the segment and detect stages "
        "(`timings_ms.inference_cpu`); everything else — JPEG decode, band estimation, the "
        "overlay, thumbnails, the AVIF render, Redis hand-offs, uploads — is non-inference.",
        "",
        f"**One photo at a time** ({reps} sessions of one photo each, same photos and workers):"
        f" {per_min.fmt(1)} photos/min; job walls: "
        + ", ".join(f"{name} {statistics.median(v):.2f} s" for name, v in single_jobs.items())
        + "; in-pool timings (ms, median):",
        "",
        *_timings_table(single_stages),
    ]
    headlines = [
        f"end to end, one session of {len(photos)} × {width * height / 1e6:.0f} MP: "
        f"{batch_min:.1f} photos/min, {failed} failed, render {statistics.median(render_s):.2f} s"
        f" and band estimation {statistics.median(stages.get('estimate', [0.0])):.0f} ms per "
        f"photo (median), non-inference share of CPU {share:.2f} ({models.label.split(' (')[0]}"
        f", {provider})"
    ]
    return "\n".join(lines), headlines
