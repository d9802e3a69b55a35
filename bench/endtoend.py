"""Section 6: end to end with 12 MP photos; also section 5 (sliced inference) and the cluster
helpers that sections 2 and 6 share.

End to end: real ``arq workers.{io,cpu,gpu}.WorkerSettings`` processes, the S3 stub at 0 ms,
4000×3000 JPEGs. Each repetition submits K one-photo sessions at once and waits until every
session is terminal (and then until every artifact is uploaded); photos/min = K ÷ wall. The
model time of a photo is ``segment + detect`` of its ``timings_ms`` (the in-pool timings of
``PhotoAnalyzer.analyze``); the share of wall time that is not model inference is
1 − Σ model time ÷ wall (one inference process, so model calls do not overlap).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from bench.common import Stat
from pipeline.client import PipelineClient
from pipeline.inference.config import BUNDLED_DET_MODEL, BUNDLED_SEG_MODEL
from pipeline.schemas import SessionResult
from pipeline.settings import Settings

if TYPE_CHECKING:
    from bench.__main__ import Harness, Proc, SectionOutput

ROLES: Final = ("io", "cpu", "gpu")
MODEL_STAGES: Final = ("segment", "detect")


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


# --------------------------------------------------------------------------- section 6


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
    from bench.io_throughput import settings_for

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


# --------------------------------------------------------------------------- section 5

SAHI_VENV: Final = Path(tempfile.gettempdir()) / "plantpipe-bench-sahi-venv"

#: Run inside the throwaway SAHI venv: SAHI's ``get_sliced_prediction`` over the same ONNX
#: detect model through a small ``DetectionModel`` adapter (SAHI 0.12 loads ONNX only through
#: Ultralytics/torch). Same preprocessing (RGB/255, pad 114), per-slice class-aware NMS,
#: GREEDYNMM/IOS 0.5 class-aware merge; one slice per model call (SAHI's default).
SAHI_SCRIPT: Final = '''\
"""Written and run by bench/endtoend.py in a throwaway venv (sahi + onnxruntime): SAHI's
get_sliced_prediction over the same ONNX detect model through a small DetectionModel adapter.
Prints one JSON line."""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
import sahi
from PIL import Image
from sahi.models.base import DetectionModel
from sahi.predict import get_sliced_prediction
from sahi.prediction import ObjectPrediction

model_path, image_path, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIZE, CONF, IOU = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])


def area(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def nms(boxes, scores, iou):
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        union = area(boxes[i : i + 1]) + area(boxes[rest]) - inter
        order = rest[inter / np.maximum(union, 1e-9) <= iou]
    return np.array(keep, dtype=np.int64)


class OnnxYoloDetect(DetectionModel):
    """YOLO (Ultralytics layout) detect model in ONNX Runtime, one slice per call."""

    def load_model(self):
        session = ort.InferenceSession(self.model_path, providers=["CPUExecutionProvider"])
        self.set_model(session)

    def set_model(self, model, **kwargs):
        self.model = model
        nc = model.get_outputs()[0].shape[1]
        nc = nc - 4 if isinstance(nc, int) else 2
        self.category_mapping = {str(i): str(i) for i in range(nc)}

    def perform_inference(self, image):
        h, w = image.shape[:2]
        x = np.full((1, 3, SIZE, SIZE), 114 / 255, np.float32)
        x[0, :, :h, :w] = image[:SIZE, :SIZE].transpose(2, 0, 1) / np.float32(255)
        out = self.model.run(None, {self.model.get_inputs()[0].name: x})[0][0]
        scores, cls = out[4:].max(0), out[4:].argmax(0)
        keep = scores >= self.confidence_threshold
        cx, cy, bw, bh = out[:4, keep]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        scores, cls = scores[keep], cls[keep]
        kept = []
        for c in np.unique(cls):
            idx = np.nonzero(cls == c)[0]
            kept += list(idx[nms(boxes[idx], scores[idx], IOU)])
        self._original_predictions = (boxes[kept], scores[kept], cls[kept], (h, w))

    def _create_object_prediction_list_from_original_predictions(
        self, shift_amount_list=None, full_shape_list=None
    ):
        boxes, scores, cls, (h, w) = self._original_predictions
        shift = shift_amount_list[0] if shift_amount_list else [0, 0]
        full = full_shape_list[0] if full_shape_list else None
        preds = []
        for b, s, c in zip(boxes, scores, cls):
            x1, y1 = max(0.0, float(b[0])), max(0.0, float(b[1]))
            x2, y2 = min(float(w), float(b[2])), min(float(h), float(b[3]))
            if x2 <= x1 or y2 <= y1:
                continue
            name = self.category_mapping[str(int(c))]
            preds.append(
                ObjectPrediction(
                    bbox=[x1, y1, x2, y2], category_id=int(c), category_name=name,
                    score=float(s), shift_amount=shift, full_shape=full,
                )
            )
        self._object_prediction_list_per_image = [preds]


rgb = np.asarray(Image.open(image_path).convert("RGB"))
model = OnnxYoloDetect(model_path=model_path, confidence_threshold=CONF, device="cpu")
times, result = [], None
for rep in range(reps + 1):  # rep 0 warms up
    t0 = time.perf_counter()
    result = get_sliced_prediction(
        rgb, model, slice_height=SIZE, slice_width=SIZE, overlap_height_ratio=0.25,
        overlap_width_ratio=0.25, perform_standard_pred=False, postprocess_type="GREEDYNMM",
        postprocess_match_metric="IOS", postprocess_match_threshold=0.5,
        postprocess_class_agnostic=False, verbose=0,
    )
    if rep:
        times.append(time.perf_counter() - t0)
boxes = [p.bbox.to_xyxy() for p in result.object_prediction_list]
out = {"times_s": times, "boxes": boxes, "sahi": sahi.__version__, "ort": ort.__version__}
print(json.dumps(out))
'''


async def sahi_python(h: Harness) -> tuple[Path | None, str]:
    """A python with ``sahi`` and ``onnxruntime`` (a throwaway venv in the temp folder,
    created on first use), or None and the reason."""
    python = SAHI_VENV / "bin" / "python"
    if not python.exists():
        rc, _out, err = await h.command(["python3", "-m", "venv", str(SAHI_VENV)], os.environ, 120)
        if rc == 0:
            argv = [str(python), "-m", "pip", "install", "-q", "sahi", "onnxruntime"]
            rc, _out, err = await h.command(argv, os.environ, 600)
        if rc != 0:
            return None, f"installing sahi failed: {err.strip()[-300:]}"
    rc, _out, err = await h.command([str(python), "-c", "import sahi, onnxruntime"], os.environ, 60)
    if rc != 0:
        return None, f"sahi does not import: {err.strip()[-300:]}"
    return python, ""


def _iou_matches(a: NDArray[np.float64], b: NDArray[np.float64], threshold: float = 0.5) -> int:
    """Greedy one-to-one matches of boxes ``a`` and ``b`` (xyxy) at IoU ≥ threshold."""
    if len(a) == 0 or len(b) == 0:
        return 0
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    matched = 0
    used = np.zeros(len(b), bool)
    for i in np.argsort(-iou.max(1)):
        j = int(np.argmax(np.where(used, -1.0, iou[i])))
        if iou[i, j] >= threshold and not used[j]:
            used[j] = True
            matched += 1
    return matched


def _ours_full_image(
    width: int, height: int, reps: int, image_path: Path
) -> tuple[list[float], NDArray[np.float64], Path, int, float, float, str]:
    """plantpipe's batched sliced detection over the whole photo (one region, no segments),
    to compare with SAHI on the same input."""
    from bench.sliced import analyzer_and_photo
    from pipeline.inference.analyze import Region

    analyzer, rgb, source = analyzer_and_photo(width, height, 11)
    h, w = rgb.shape[:2]
    Image.fromarray(rgb).save(image_path)
    region = Region(segment_index=0, x0=0, y0=0, mask=np.ones((h, w), dtype=bool))
    found, n_slices = analyzer.detect_sliced(rgb, [region], batched=True)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        found, n_slices = analyzer.detect_sliced(rgb, [region], batched=True)
        times.append(time.perf_counter() - t0)
    cfg = analyzer.config
    model = cfg.det_model_path or BUNDLED_DET_MODEL
    boxes = np.asarray(found[0].boxes, dtype=np.float64)
    return times, boxes, Path(model), n_slices, cfg.det_conf, cfg.det_iou, source


async def compare_sahi(h: Harness, width: int, height: int, reps: int) -> tuple[str, str]:
    """The comparison's markdown and its headline ("" when not compared)."""
    python, problem = await sahi_python(h)
    if python is None:
        return f"SAHI was not compared: {problem}.", ""
    image_path = h.log_dir / "sahi-photo.png"
    times, ours, model, n_slices, conf, iou, _source = await asyncio.to_thread(
        _ours_full_image, width, height, reps, image_path
    )
    script = h.log_dir / "sahi_compare.py"
    await asyncio.to_thread(script.write_text, SAHI_SCRIPT)
    argv = [str(python), str(script), str(model), str(image_path), str(reps), "512", str(conf),
            str(iou)]  # fmt: skip
    rc, out, err = await h.command(argv, os.environ, 600)
    if rc != 0:
        return f"SAHI was not compared: its run failed: {err.strip()[-400:]}", ""
    data = json.loads(out.strip().splitlines()[-1])
    sahi_boxes = np.asarray(data["boxes"], dtype=np.float64).reshape(-1, 4)
    ours_t, sahi_t = Stat.of(times), Stat.of([float(t) for t in data["times_s"]])
    matched = _iou_matches(ours, sahi_boxes)
    headline = (
        f"sliced detection vs SAHI {data['sahi']} on the whole photo: "
        f"{ours_t.median:.2f} s vs {sahi_t.median:.2f} s per photo, {matched} of "
        f"{len(ours)}/{len(sahi_boxes)} detections matched"
    )
    return "\n".join(
        [
            f"Against SAHI {data['sahi']} (onnxruntime {data['ort']}, throwaway venv): the same "
            f"photo and detect model, sliced over the **whole** {width}×{height} photo (no "
            "segmentation; SAHI has none), slices 512 px, overlap 0.25, GREEDYNMM / IOS 0.5 "
            "class-aware, `perform_standard_pred=False`. SAHI 0.12 loads ONNX models only "
            "through Ultralytics (torch), so the model runs under a 50-line SAHI "
            "`DetectionModel` adapter (ONNX Runtime, same preprocessing and per-slice NMS), one "
            "slice per call as SAHI does by default.",
            "",
            "| implementation | seconds per photo (detection only) | detections |",
            "|---|---|---|",
            f"| plantpipe `detect_sliced`, batched ({n_slices} slices) | {ours_t.fmt(3)} | "
            f"{len(ours)} |",
            f"| SAHI `get_sliced_prediction` + adapter | {sahi_t.fmt(3)} | {len(sahi_boxes)} |",
            "",
            f"{matched} detections match one-to-one at IoU ≥ 0.5 "
            f"({matched / max(1, len(ours)):.1%} of plantpipe's, "
            f"{matched / max(1, len(sahi_boxes)):.1%} of SAHI's); plantpipe is "
            f"{sahi_t.median / ours_t.median:.2f}× SAHI's speed on this input.",
        ]
    ), headline


async def run_sliced(h: Harness) -> SectionOutput:
    from bench import sliced

    reps = 5
    width, height = (2000, 1500) if h.quick else (4000, 3000)
    body = await asyncio.to_thread(sliced.run, reps, width, height)
    headlines: list[str] = []
    speedup = next((ln for ln in body.splitlines() if ln.startswith("Speed-up")), "")
    if speedup:
        headlines.append(f"sliced detection {width}×{height}, batched vs one slice per call: "
                         f"{speedup.split(';')[0].removeprefix('Speed-up ')}")  # fmt: skip
    try:
        versus, line = await compare_sahi(h, width, height, reps)
        if line:
            headlines.append(line)
    except Exception as exc:  # the comparison is optional; say why it is missing
        versus = f"SAHI was not compared: the comparison failed ({exc!r})."
    return (
        f"`bench.sliced.run(reps={reps}, width={width}, height={height})`, output as is:\n\n"
        f"{body}\n\n{versus}",
        headlines,
    )
