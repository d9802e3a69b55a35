"""Training data: synthetic scenes from :mod:`pipeline.synth`, prepared for each model.

Detection keeps the full-resolution scene (crops are cut at sampling time, see
:mod:`training.augment`); segmentation keeps the scene letterboxed to 1024 px by the
runtime's own :func:`pipeline.inference.yolo.letterbox` and average-pooled 4× (as the seg
graph does), plus one mask per container. No PyTorch here.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

import pipeline.inference.yolo as yolo_module
import pipeline.synth as synth_package
from pipeline.inference.yolo import LetterboxInfo, letterbox
from pipeline.synth import Scene, generate_scene
from pipeline.synth.scene import Variant
from training.layout import (
    SEG_EXTRA_OFFSET,
    SEG_IMGSZ,
    SEG_NET,
    SEG_POOL,
    SEG_SHAPES,
    VARIANT_OFFSET,
    VARIANT_STRIDE,
)

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]
# (seed, width, height, keep full-res for det, generator variant)
SceneJob = tuple[int, int, int, bool, Variant]


@dataclass
class DetScene:
    image: U8  # HxWx3 (emptied once training holds it as a PIL image)
    boxes: F32  # (n, 4) xyxy
    vis: F32  # (n,)
    containers: F32  # (k, 4) container bboxes
    height: int
    width: int


@dataclass
class SegScene:
    image: U8  # SEG_NET x SEG_NET x 3 (letterboxed to SEG_IMGSZ, pooled SEG_POOL×)
    masks: NDArray[np.bool_]  # (k, SEG_NET, SEG_NET)
    classes: NDArray[np.int64]  # (k,)


def letterbox_u8(rgb: U8, size: int) -> tuple[U8, LetterboxInfo]:
    """The runtime's letterbox (PIL bilinear, grey 114, same rounding), as HxWx3 uint8.

    :func:`pipeline.inference.yolo.letterbox` writes ``uint8 / 255`` as float32; multiplying
    back by 255 and rounding recovers the exact uint8 values.
    """
    chw, info = letterbox(rgb, size)
    u8 = np.rint(chw.transpose(1, 2, 0) * np.float32(255.0)).astype(np.uint8)
    return np.ascontiguousarray(u8), info


def pool_u8(img: U8, k: int) -> U8:
    """Average-pool an HxWx3 uint8 image by ``k`` (as the seg graph does), uint8 result."""
    h, w = img.shape[:2]
    f = img.reshape(h // k, k, w // k, k, 3).astype(np.float32).mean(axis=(1, 3))
    out: U8 = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    return out


def polygon_mask(poly: Sequence[tuple[float, float]], width: int, height: int) -> NDArray[np.bool_]:
    """A ground-truth polygon rasterised (PIL, filled) on a ``width × height`` grid."""
    m = Image.new("L", (width, height), 0)
    ImageDraw.Draw(m).polygon([(float(x), float(y)) for x, y in poly], fill=255)
    return np.asarray(m) > 127


def seg_scene(scene: Scene) -> SegScene:
    lb, info = letterbox_u8(np.asarray(scene.image), SEG_IMGSZ)
    small = pool_u8(lb, SEG_POOL)
    masks = []
    for c in scene.containers:
        poly = [
            ((x * info.scale + info.pad_x) / SEG_POOL, (y * info.scale + info.pad_y) / SEG_POOL)
            for x, y in c.polygon
        ]
        masks.append(polygon_mask(poly, SEG_NET, SEG_NET))
    return SegScene(
        image=small,
        masks=np.stack(masks) if masks else np.zeros((0, SEG_NET, SEG_NET), dtype=bool),
        classes=np.array([c.class_id for c in scene.containers], dtype=np.int64),
    )


def det_scene(scene: Scene) -> DetScene:
    return DetScene(
        image=np.array(scene.image),
        boxes=np.array([p.box for p in scene.plants], dtype=np.float32).reshape(-1, 4),
        vis=np.array([p.visibility for p in scene.plants], dtype=np.float32),
        containers=np.array([c.bbox for c in scene.containers], dtype=np.float32).reshape(-1, 4),
        height=scene.height,
        width=scene.width,
    )


def generator_fingerprint() -> str:
    """A digest of the sources that make a scene (the generator, the runtime's letterbox,
    this module): a scene cache made by other code is never read (the cache directory's name
    holds it)."""
    digest = hashlib.sha256()
    sources = sorted(Path(synth_package.__file__).parent.glob("*.py"))
    sources += [Path(yolo_module.__file__), Path(__file__)]
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cache_file(cache: Path, job: SceneJob) -> Path:
    seed, w, h, want_det, variant = job
    return cache / f"{variant}-{seed}-{w}x{h}-{'det' if want_det else 'seg'}.npz"


def _load(path: Path, want_det: bool) -> tuple[DetScene | None, SegScene]:
    with np.load(path) as z:
        seg = SegScene(image=z["seg_image"], masks=z["seg_masks"], classes=z["seg_classes"])
        det = None
        if want_det:
            height, width = (int(v) for v in z["det_size"])
            det = DetScene(
                image=z["det_image"],
                boxes=z["det_boxes"],
                vis=z["det_vis"],
                containers=z["det_containers"],
                height=height,
                width=width,
            )
    return det, seg


def _save(path: Path, det: DetScene | None, seg: SegScene) -> None:
    arrays: dict[str, Any] = {
        "seg_image": seg.image,
        "seg_masks": seg.masks,
        "seg_classes": seg.classes,
    }
    if det is not None:
        arrays |= {
            "det_image": det.image,
            "det_boxes": det.boxes,
            "det_vis": det.vis,
            "det_containers": det.containers,
            "det_size": np.array([det.height, det.width]),
        }
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)  # whole files only: a killed build leaves no half scene behind


def _job(args: tuple[SceneJob, str | None]) -> tuple[DetScene | None, SegScene]:
    job, cache = args
    path = _cache_file(Path(cache), job) if cache is not None else None
    if path is not None and path.is_file():
        return _load(path, job[3])
    seed, w, h, want_det, variant = job
    scene = generate_scene(seed, w, h, variant=variant)
    out = (det_scene(scene) if want_det else None), seg_scene(scene)
    if path is not None:
        _save(path, *out)
    return out


def scene_jobs(
    base: int, n_det: int, n_seg_shared: int, n_seg_extra: int, det: bool, seg: bool
) -> list[SceneJob]:
    """Scene jobs ``(seed, width, height, keep full-res for det)``.

    Detection uses seeds ``base + i`` (2000×1500, ``i < n_det``); segmentation uses the first
    ``n_seg_shared`` of those plus ``n_seg_extra`` scenes of varied aspect ratios at seeds
    ``base + SEG_EXTRA_OFFSET + j``. Which models are built does not change any model's data.
    """
    n_first = max(n_det if det else 0, n_seg_shared if seg else 0)
    jobs: list[SceneJob] = [
        (base + i, 2000, 1500, det and i < n_det, "classic") for i in range(n_first)
    ]
    if seg:
        for j in range(n_seg_extra):
            w, h = SEG_SHAPES[j % len(SEG_SHAPES)]
            jobs.append((base + SEG_EXTRA_OFFSET + j, w, h, False, "classic"))
    return jobs


def variant_jobs(
    base: int, variants: Sequence[Variant], n_det: int, n_seg: int, det: bool, seg: bool
) -> list[SceneJob]:
    """Scene jobs of the other generators (``wide`` and the conditions), after the classic ones.

    Variant ``k`` (its index in ``variants``) uses seeds ``base + VARIANT_OFFSET + k ·
    VARIANT_STRIDE + i``: ``n_det`` scenes at 2000×1500 for detection (segmentation uses them
    too), then ``n_seg`` at the segmentation shapes for segmentation only.
    """
    jobs: list[SceneJob] = []
    for k, variant in enumerate(variants):
        first = base + VARIANT_OFFSET + k * VARIANT_STRIDE
        n_first = n_det if det else (n_det if seg else 0)
        jobs += [(first + i, 2000, 1500, det, variant) for i in range(n_first)]
        if seg:
            for j in range(n_seg):
                w, h = SEG_SHAPES[j % len(SEG_SHAPES)]
                jobs.append((first + VARIANT_STRIDE // 2 + j, w, h, False, variant))
    return jobs


def generate(
    jobs: list[SceneJob], workers: int, cache: Path | None = None
) -> list[tuple[DetScene | None, SegScene]]:
    """Run the scene jobs, in order (``workers`` spawned processes when more than one).

    With ``cache``, each scene is read from ``cache/<generator fingerprint>/`` when an
    earlier run made it with the same code, and written there otherwise (about 9 MB per
    2000×1500 detection scene): a second build, or one that was cut off, skips generation."""
    where: str | None = None
    if cache is not None:
        folder = cache / generator_fingerprint()
        folder.mkdir(parents=True, exist_ok=True)
        where = str(folder)
    tasks = [(j, where) for j in jobs]
    if workers <= 1:
        return [_job(t) for t in tasks]
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        return list(pool.imap(_job, tasks, chunksize=2))


def split_scenes(
    jobs: list[SceneJob],
    results: list[tuple[DetScene | None, SegScene]],
    base: int,
    n_seg_shared: int,
) -> tuple[list[DetScene], list[SegScene]]:
    """The detection scenes and the segmentation scenes of :func:`generate`'s results."""
    det = [d for d, _ in results if d is not None]
    seg = [
        s
        for (seed, _, _, _, variant), (_, s) in zip(jobs, results, strict=True)
        if variant != "classic" or seed - base < n_seg_shared or seed - base >= SEG_EXTRA_OFFSET
    ]
    return det, seg
