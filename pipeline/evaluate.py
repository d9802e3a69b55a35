"""Accuracy on held-out synthetic scenes: detection AP50 and count error.

    plantpipe evaluate --scenes 50 --seed 100000 [--size 2000x1500] [--variant wide]

Each scene is generated (seeded), JPEG-encoded, and analysed by the same ``PhotoAnalyzer``
the gpu workers run (segmentation, sliced detection, band estimation). ``variant`` picks the
generator: ``classic`` (the scenes the default models were trained on) or ``wide`` (what
real nurseries vary: touching and overlapping trays, plain dark trays, plant size
independent of the photo up to ~200 px, colour casts, blur, JPEG quality, perspective; see
``pipeline.synth``). Reported:

* detection AP50 — all-point interpolated average precision at IoU 0.5 over every plant;
* count error of detected + estimated vs the true plant count per scene (MAPE and MAE), the
  same for detection alone, and how much band estimation lowers the error; the worst scene;
* duplicates — detections that count a plant already counted (see :func:`count_duplicates`),
  as a share of all plants.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydantic import BaseModel

from pipeline.inference.analyze import PhotoAnalyzer
from pipeline.inference.config import InferenceConfig
from pipeline.synth import Scene, generate_scene
from pipeline.synth.scene import Variant
from pipeline.vision.merge import match_metric


@dataclass(frozen=True)
class SceneScore:
    seed: int
    truth: int
    detected: int
    estimated: int
    seconds: float
    duplicates: int = 0
    unassigned: int = 0

    @property
    def total(self) -> int:
        return self.detected + self.estimated

    @property
    def error_pct(self) -> float:
        return (self.total - self.truth) / max(self.truth, 1) * 100.0


class EvaluationReport(BaseModel):
    scenes: int
    width: int
    height: int
    first_seed: int
    plants: int
    ap50: float
    mape_total: float
    mae_total: float
    mape_detection_only: float
    mae_detection_only: float
    seconds_per_scene: float
    variant: str = "classic"
    duplicates_pct: float = 0.0
    worst_seed: int = 0
    worst_error_pct: float = 0.0
    unassigned: int = 0

    @property
    def improvement_pp(self) -> float:
        """Percentage points of MAPE that band estimation removes."""
        return self.mape_detection_only - self.mape_total

    def markdown(self) -> str:
        return "\n".join(
            [
                f"{self.scenes} held-out synthetic scenes (`{self.variant}` generator, "
                f"{self.width}×{self.height}, seeds "
                f"{self.first_seed}…{self.first_seed + self.scenes - 1}), {self.plants} plants.",
                "",
                "| metric | detection only | detection + band estimation |",
                "|---|---|---|",
                f"| count MAPE | {self.mape_detection_only:.1f}% | {self.mape_total:.1f}% |",
                f"| count MAE (plants/scene) | {self.mae_detection_only:.1f} | "
                f"{self.mae_total:.1f} |",
                f"| detection AP50 | {self.ap50:.3f} | |",
                f"| worst scene (seed: error) | | {self.worst_seed}: "
                f"{self.worst_error_pct:+.1f}% |",
                f"| duplicates (share of plants) | {self.duplicates_pct:.2f}% | |",
                "",
                f"Band estimation lowers MAPE by {self.improvement_pp:.1f} percentage points; "
                f"{self.unassigned} detections lay outside every segment (counted); "
                f"{self.seconds_per_scene:.2f} s per scene on CPU.",
            ]
        )


def average_precision(scored_hits: Sequence[tuple[float, bool]], positives: int) -> float:
    """All-point interpolated AP from (score, is_true_positive) over ``positives`` truths."""
    if positives == 0:
        return 0.0
    ordered = sorted(scored_hits, key=lambda item: -item[0])
    hits = np.array([h for _, h in ordered], dtype=np.float64)
    tp = np.cumsum(hits)
    fp = np.cumsum(1.0 - hits)
    recall = np.concatenate([[0.0], tp / positives, [1.0]])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1e-12), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def match_detections(
    boxes: NDArray[np.float64], scores: NDArray[np.float64], truth: NDArray[np.float64]
) -> list[tuple[float, bool]]:
    """Greedy matching at IoU ≥ 0.5, best score first; each truth matched once."""
    taken = np.zeros(len(truth), dtype=bool)
    out: list[tuple[float, bool]] = []
    for i in np.argsort(-scores, kind="stable"):
        hit = False
        if len(truth):
            iou = match_metric(boxes[i], truth, "iou")
            iou[taken] = -1.0
            best = int(np.argmax(iou))
            if iou[best] >= 0.5:
                taken[best] = True
                hit = True
        out.append((float(scores[i]), hit))
    return out


def count_duplicates(
    boxes: NDArray[np.float64], scores: NDArray[np.float64], truth: NDArray[np.float64]
) -> int:
    """Detections that count a plant already counted.

    Detections are first matched one to one to the plants (greedy by score at IoU ≥ 0.5, as
    for AP50). An unmatched detection is a duplicate when the plant it overlaps most (IoU ≥
    0.25: half a plant still counts) is already matched and it overlaps no unmatched plant by
    IoU ≥ 0.25 (then it is more likely a poorly placed box of that missed plant).
    """
    if len(boxes) == 0 or len(truth) == 0:
        return 0
    matched = np.zeros(len(truth), dtype=bool)
    unmatched_dets: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        iou = match_metric(boxes[i], truth, "iou")
        iou[matched] = -1.0
        best = int(np.argmax(iou))
        if iou[best] >= 0.5:
            matched[best] = True
        else:
            unmatched_dets.append(int(i))
    duplicates = 0
    for i in unmatched_dets:
        iou = match_metric(boxes[i], truth, "iou")
        best = int(np.argmax(iou))
        if iou[best] < 0.25 or not matched[best]:
            continue
        if np.any(iou[~matched] >= 0.25):
            continue
        duplicates += 1
    return duplicates


def encode(scene: Scene, quality: int | None = None) -> bytes:
    """JPEG bytes of the scene, at its own ``jpeg_quality`` (90 when it has none)."""
    q = quality if quality is not None else (scene.jpeg_quality or 90)
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="JPEG", quality=q)
    return buf.getvalue()


def score_scene(
    analyzer: PhotoAnalyzer, seed: int, width: int, height: int, variant: Variant
) -> tuple[SceneScore, list[tuple[float, bool]]]:
    """One generated scene through ``analyzer``: its score and its (score, hit) pairs."""
    scene = generate_scene(seed, width, height, variant=variant)
    t0 = time.perf_counter()
    output = analyzer.analyze(encode(scene))
    elapsed = time.perf_counter() - t0
    analysis = output.analysis
    truth = np.array([p.box for p in scene.plants], dtype=np.float64).reshape(-1, 4)
    boxes = np.array(
        [(d.cx - d.w / 2, d.cy - d.h / 2, d.cx + d.w / 2, d.cy + d.h / 2)
         for d in analysis.detections],
        dtype=np.float64,
    ).reshape(-1, 4)  # fmt: skip
    confidences = np.array([d.confidence for d in analysis.detections], dtype=np.float64)
    score = SceneScore(
        seed,
        len(truth),
        analysis.total_detected,
        analysis.total_estimated,
        elapsed,
        duplicates=count_duplicates(boxes, confidences, truth),
        unassigned=sum(d.segment_index is None for d in analysis.detections),
    )
    return score, match_detections(boxes, confidences, truth)


_WORKER: PhotoAnalyzer | None = None


def _init_worker(config: InferenceConfig) -> None:
    global _WORKER
    _WORKER = PhotoAnalyzer.load(config)


def _score_in_worker(
    job: tuple[int, int, int, Variant],
) -> tuple[SceneScore, list[tuple[float, bool]]]:
    assert _WORKER is not None, "pool worker without an analyzer"
    seed, width, height, variant = job
    return score_scene(_WORKER, seed, width, height, variant)


def evaluate(
    analyzer: PhotoAnalyzer,
    *,
    scenes: int = 50,
    first_seed: int = 100_000,
    width: int = 2000,
    height: int = 1500,
    variant: Variant = "classic",
    progress: Callable[[SceneScore], None] | None = None,
    seeds: Sequence[int] | None = None,
    jobs: int = 1,
) -> EvaluationReport:
    """Evaluate ``analyzer`` on ``scenes`` scenes from ``first_seed`` (or on ``seeds``).

    ``jobs`` > 1 generates and analyses scenes in that many spawned processes, each with its
    own single-threaded analyzer built from ``analyzer.config`` (same results; per-scene
    seconds then include the contention of the processes).
    """
    all_hits: list[tuple[float, bool]] = []
    scores: list[SceneScore] = []
    chosen = list(seeds) if seeds is not None else list(range(first_seed, first_seed + scenes))
    results: Iterable[tuple[SceneScore, list[tuple[float, bool]]]]
    pool: ProcessPoolExecutor | None = None
    if jobs > 1 and len(chosen) > 1:
        config = analyzer.config.model_copy(update={"intra_op_threads": 1, "warmup": False})
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(config,),
        )
        results = pool.map(_score_in_worker, [(s, width, height, variant) for s in chosen])
    else:
        results = (score_scene(analyzer, s, width, height, variant) for s in chosen)
    try:
        for score, hits in results:
            all_hits.extend(hits)
            scores.append(score)
            if progress is not None:
                progress(score)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    positives = sum(s.truth for s in scores)
    truths = np.array([s.truth for s in scores], dtype=np.float64)
    totals = np.array([s.total for s in scores], dtype=np.float64)
    detected = np.array([s.detected for s in scores], dtype=np.float64)
    safe = np.maximum(truths, 1.0)
    worst = max(scores, key=lambda s: abs(s.error_pct))
    return EvaluationReport(
        scenes=len(chosen),
        first_seed=chosen[0] if chosen else first_seed,
        variant=variant,
        duplicates_pct=round(100.0 * sum(s.duplicates for s in scores) / max(positives, 1), 3),
        worst_seed=worst.seed,
        worst_error_pct=round(worst.error_pct, 2),
        unassigned=sum(s.unassigned for s in scores),
        width=width,
        height=height,
        plants=int(truths.sum()),
        ap50=round(average_precision(all_hits, positives), 4),
        mape_total=round(float(np.mean(np.abs(totals - truths) / safe) * 100), 2),
        mae_total=round(float(np.mean(np.abs(totals - truths))), 2),
        mape_detection_only=round(float(np.mean(np.abs(detected - truths) / safe) * 100), 2),
        mae_detection_only=round(float(np.mean(np.abs(detected - truths))), 2),
        seconds_per_scene=round(float(np.mean([s.seconds for s in scores])), 3),
    )


def default_analyzer(config: InferenceConfig | None = None) -> PhotoAnalyzer:
    cfg = config or InferenceConfig(providers=["CPUExecutionProvider"], warmup=False)
    return PhotoAnalyzer.load(cfg)


def _sha256(path: Path | None) -> str:
    if path is None:
        return "none"
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: a generator variant at one photo size."""

    variant: Variant
    width: int
    height: int

    @property
    def label(self) -> str:
        return f"{self.variant}@{self.width}x{self.height}"


def parse_size(text: str) -> tuple[int, int]:
    """``"4000x3000"`` → ``(4000, 3000)``; raises ValueError otherwise."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size must look like 2000x1500, got {text!r}")
    width, height = (int(p) for p in parts)
    if width < 64 or height < 64:
        raise ValueError(f"size {width}x{height} is too small (64 px at least)")
    return width, height


def parse_set(text: str) -> EvalSet:
    """``"wide@4000x3000"`` (or ``"classic"``, size 2000×1500) → an :class:`EvalSet`."""
    name, _, size = text.partition("@")
    if name not in ("classic", "wide"):
        raise ValueError(f"set must be classic[@WxH] or wide[@WxH], got {text!r}")
    width, height = parse_size(size) if size else (2000, 1500)
    variant: Variant = "wide" if name == "wide" else "classic"
    return EvalSet(variant, width, height)


Run = tuple[EvaluationReport, Sequence[SceneScore]]


def report_document(
    runs: Sequence[Run],
    analyzer: PhotoAnalyzer,
    *,
    command: str,
    started: float,
    wall_s: float,
) -> str:
    """The evaluation as a markdown document: provenance, then per set the summary and one
    row per scene."""
    seg, det = analyzer.config.check_models()
    when = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# plantpipe counting accuracy",
        "",
        f"- Command: `{command}` ({wall_s / 60:.1f} min, {when}, {platform.node() or 'host'}, "
        f"{os.cpu_count()} CPUs, provider {analyzer.provider})",
        f"- Detection model: `{det.name}` sha256 `{_sha256(det)}`",
        f"- Segmentation model: `{seg.name if seg else 'none'}` sha256 `{_sha256(seg)}`",
        "- Ground truth: every plant of each generated scene (`pipeline.synth`); estimated = "
        "band estimation's count of plants not detected; duplicates = detections that count "
        "a plant already counted (left over by the one-to-one matching at IoU ≥ 0.5, on a "
        "matched plant by IoU ≥ 0.25, near no missed plant); outside segments = detections "
        "whose centre lies in no container segment (counted, segment index none)",
        "- Settings: "
        + ", ".join(
            f"{name} {getattr(analyzer.config, name)}"
            for name in (
                "slice_size",
                "slice_overlap",
                "det_iou",
                "merge_ios",
                "merge_within_slice",
                "merge_large_px",
                "merge_ios_large",
                "slice_edge_margin_px",
                "rescale_slices",
                "rescale_min_px",
                "rescale_max_px",
                "rescale_small_target_px",
                "rescale_large_target_px",
                "rescale_small_gain",
                "segment_merge_overlap",
                "segment_crop_pad",
                "count_unassigned",
                "unassigned_slice_fraction",
                "default_plant_area_px",
            )
        ),
    ]
    if len(runs) > 1:
        lines += [
            "",
            "| set | scenes | plants | MAPE | MAE | worst scene | duplicates | AP50 | s/scene |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for report, _ in runs:
            lines.append(
                f"| `{report.variant}` {report.width}×{report.height} | {report.scenes} | "
                f"{report.plants} | {report.mape_total:.1f}% | {report.mae_total:.1f} | "
                f"{report.worst_seed}: {report.worst_error_pct:+.1f}% | "
                f"{report.duplicates_pct:.2f}% | {report.ap50:.3f} | "
                f"{report.seconds_per_scene:.2f} |"
            )
    for report, scores in runs:
        lines += [
            "",
            f"## `{report.variant}` scenes at {report.width}×{report.height}",
            "",
            report.markdown(),
            "",
            "| seed | true plants | detected | estimated | detected + estimated | error | "
            "duplicates | outside segments | s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in scores:
            lines.append(
                f"| {s.seed} | {s.truth} | {s.detected} | {s.estimated} | {s.total} | "
                f"{s.error_pct:+.1f}% | {s.duplicates} | {s.unassigned} | {s.seconds:.1f} |"
            )
    return "\n".join(lines) + "\n"


def run_sets(
    analyzer: PhotoAnalyzer,
    sets: Sequence[EvalSet],
    *,
    scenes: int,
    first_seed: int,
    progress: Callable[[EvalSet, SceneScore], None] | None = None,
    jobs: int = 1,
) -> list[Run]:
    """:func:`evaluate` on each set in turn (same seeds), with its per-scene scores."""
    runs: list[Run] = []
    for chosen in sets:
        scores: list[SceneScore] = []

        def record(
            score: SceneScore, chosen: EvalSet = chosen, scores: list[SceneScore] = scores
        ) -> None:
            scores.append(score)
            if progress is not None:
                progress(chosen, score)

        report = evaluate(
            analyzer,
            scenes=scenes,
            first_seed=first_seed,
            width=chosen.width,
            height=chosen.height,
            variant=chosen.variant,
            progress=record,
            jobs=jobs,
        )
        runs.append((report, scores))
    return runs


def resolve_sets(
    sets: Sequence[str] | None,
    sizes: Sequence[str] | None,
    variant: str,
    width: int | None,
    height: int | None,
) -> list[EvalSet]:
    """The sets a command line asks for: ``--set`` entries; else ``--variant`` at each
    ``--size`` (or ``--width``/``--height``, default 2000×1500). Raises ValueError."""
    if sets:
        return [parse_set(s) for s in sets]
    if variant not in ("classic", "wide"):
        raise ValueError(f"variant must be classic or wide, got {variant!r}")
    dims = [parse_size(s) for s in sizes] if sizes else [(width or 2000, height or 1500)]
    return [parse_set(f"{variant}@{w}x{h}") for w, h in dims]
