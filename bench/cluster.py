"""The worker clusters a benchmark section starts, and what it feeds them.

* :func:`start_cluster`: plantpipe's ``arq workers.{io,cpu,gpu}.WorkerSettings`` processes on
  one key prefix, ready (heartbeats written); :func:`submit_and_wait` runs one session on it;
* :func:`start_celery_worker` / :func:`celery_produce`: the Celery baseline's worker and
  producer, in the baseline's own venv;
* the models a cluster runs (:func:`fixture_models`, :func:`default_models`) and the photos it
  is given (:func:`fixture_photo`, :func:`scene_photo`, :func:`jpeg`).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from redis.asyncio import Redis

from bench.harness import Harness, Proc
from pipeline.client import PipelineClient
from pipeline.inference.config import BUNDLED_DET_MODEL, BUNDLED_SEG_MODEL

ROLES: Final = ("io", "cpu", "gpu")
#: The original io worker's pool: gevent, 50 greenlets.
GEVENT_POOL: Final = ("--pool=gevent", "--concurrency=50")


@dataclass(frozen=True)
class Models:
    env: dict[str, str]
    label: str
    bundled: bool


def fixture_models(h: Harness) -> Models:
    """The test suite's YOLO-layout fixture models (segment 320, detect 512)."""
    from pipeline.testing.onnx_fixtures import build_detect_model, build_segment_model

    root = h.log_dir / "models"
    seg = build_segment_model(root / "seg.onnx", input_size=320, batch=1)
    det = build_detect_model(root / "det.onnx", input_size=512)
    return Models(
        env={
            "PLANTPIPE_SEG_MODEL_PATH": str(seg),
            "PLANTPIPE_SEG_INPUT_SIZE": "320",
            "PLANTPIPE_DET_MODEL_PATH": str(det),
            "PLANTPIPE_DET_INPUT_SIZE": "512",
        },
        label="fixture YOLO-layout models of the test suite (pipeline/testing/onnx_fixtures.py: "
        "segment input 320, detect input 512)",
        bundled=False,
    )


def default_models(h: Harness) -> Models:
    """The bundled models when ``pipeline/models/{seg,det}.onnx`` exist, else the fixtures."""
    if BUNDLED_SEG_MODEL.exists() and BUNDLED_DET_MODEL.exists():
        return Models(env={}, label="bundled default models (pipeline/models)", bundled=True)
    return fixture_models(h)


def jpeg(rgb: NDArray[np.uint8], quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def fixture_photo(width: int, height: int, seed: int) -> bytes:
    from pipeline.testing.onnx_fixtures import make_nursery_photo

    margin = max(30, width // 40)
    mid = width // 2
    left = (margin, margin, mid - margin // 2, height - margin)
    right = (mid + margin // 2, margin, width - margin, height - margin)
    trays = (left, right)
    return jpeg(make_nursery_photo(width, height, trays, skip=0.3, seed=seed).rgb)


def scene_photo(width: int, height: int, seed: int) -> bytes:
    from pipeline.synth import encode_jpeg, generate_scene

    return encode_jpeg(generate_scene(seed, width, height))


@dataclass
class Cluster:
    prefix: str
    procs: list[Proc] = field(default_factory=list)

    def check(self) -> None:
        for proc in self.procs:
            proc.check()


async def start_cluster(h: Harness, prefix: str, extra_env: dict[str, str]) -> Cluster:
    env = h.env(prefix, **extra_env)
    cluster = Cluster(prefix)
    for role in ROLES:
        name = f"{prefix.rsplit('-', 1)[-1]}-{role}"
        cluster.procs.append(h.arq_worker(name, f"workers.{role}.WorkerSettings", env))
    for role, proc in zip(ROLES, cluster.procs, strict=True):
        await h.wait_for_heartbeat(prefix, role, proc, timeout=120)
    return cluster


async def submit_and_wait(
    client: PipelineClient, photos: list[bytes], timeout: float
) -> tuple[str, float, float]:
    """One session; (session id, seconds to terminal, seconds to all artifacts uploaded)."""
    t0 = time.perf_counter()
    sid = await client.submit(photos)
    record = await client.wait(sid, timeout=timeout)
    terminal = time.perf_counter() - t0
    if record.status != "completed":
        raise RuntimeError(f"session {sid} ended {record.status}: {record.reason}")
    await client.wait(sid, timeout=timeout, artifacts=True)
    return sid, terminal, time.perf_counter() - t0


# --------------------------------------------------------------------------- Celery


async def start_celery_worker(
    h: Harness,
    queue: str,
    pool: tuple[str, ...] = GEVENT_POOL,
) -> Proc | None:
    """``celery worker`` of the baseline (gevent pool of 50 unless ``pool`` says otherwise),
    ready; None when the Celery venv is not available (``h.celery_problem`` says why)."""
    python = await h.celery_python()
    if python is None:
        return None
    env = h.celery_env(queue)
    proc = h.spawn(
        f"celery-{queue.rsplit('-', 1)[-1]}",
        [
            str(python), "-m", "celery", "-A", "bench.celery_baseline.tasks", "worker",
            *pool, "-Q", queue,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel=WARNING", "-n", f"{queue}@%h",
        ],
        env,
    )  # fmt: skip
    celery_db = Redis.from_url(h.celery_redis_url)
    try:

        async def ready() -> bool:
            return bool(await celery_db.exists(f"{queue}:ready"))

        await h.wait_until(ready, "celery worker ready", 60, [proc])
    finally:
        await celery_db.aclose()
    return proc


async def celery_produce(h: Harness, queue: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run ``bench.celery_baseline.produce`` in the Celery venv; its JSON line."""
    python = await h.celery_python()
    if python is None:
        raise RuntimeError(h.celery_problem or "no Celery venv")
    argv = [str(python), "-m", "bench.celery_baseline.produce", *args]
    rc, out, err = await h.command(argv, h.celery_env(queue), timeout)
    if rc != 0:
        raise RuntimeError(f"celery producer failed ({rc}): {err.strip()[-1500:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result
