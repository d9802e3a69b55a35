"""Held-out scenes through the analyzer: one generated scene scored (``score_scene``), a
set of them, in spawned processes with ``jobs`` > 1 (``evaluate``)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.evaluation.metrics import (
    EvaluationReport,
    SceneScore,
    average_precision,
    centred_in,
    count_duplicates,
    false_detections,
    match_detections,
    match_one_to_one,
)
from pipeline.evaluation.truth import photo_truth
from pipeline.inference.analyze import PhotoAnalyzer
from pipeline.inference.config import InferenceConfig
from pipeline.synth.scene import Variant

#: Plants at least this visible count in the recall by foliage (the rest are mostly hidden).
CLEAR_VISIBILITY = 0.5


def score_scene(
    analyzer: PhotoAnalyzer,
    seed: int,
    width: int,
    height: int,
    variant: Variant,
    cache: Path | None = None,
) -> tuple[SceneScore, list[tuple[float, bool]]]:
    """One generated scene through ``analyzer``: its score and its (score, hit) pairs
    (``cache``: a folder of generated photos, see ``pipeline.evaluation.truth``)."""
    photo = photo_truth(seed, width, height, variant, cache)
    t0 = time.perf_counter()
    output = analyzer.analyze(photo.jpeg)
    elapsed = time.perf_counter() - t0
    analysis = output.analysis
    truth = photo.boxes
    boxes = np.array(
        [
            (d.cx - d.w / 2, d.cy - d.h / 2, d.cx + d.w / 2, d.cy + d.h / 2)
            for d in analysis.detections
        ],
        dtype=np.float64,
    ).reshape(-1, 4)
    confidences = np.array([d.confidence for d in analysis.detections], dtype=np.float64)
    matched, _ = match_one_to_one(boxes, confidences, truth)
    false = false_detections(boxes, truth)
    clear = photo.visibility >= CLEAR_VISIBILITY
    foliage: dict[str, tuple[int, int]] = {}
    for group, hit, shown in zip(photo.foliage, matched, clear, strict=True):
        if shown:
            found, total = foliage.get(group, (0, 0))
            foliage[group] = (found + int(hit), total + 1)
    score = SceneScore(
        seed,
        len(truth),
        analysis.total_detected,
        analysis.total_estimated,
        elapsed,
        duplicates=count_duplicates(boxes, confidences, truth),
        unassigned=sum(d.segment_index is None for d in analysis.detections),
        false_detections=int(false.sum()),
        false_empty=int((false & centred_in(boxes, photo.empty)).sum()),
        foliage=foliage,
    )
    return score, match_detections(boxes, confidences, truth)


_WORKER: PhotoAnalyzer | None = None


def _init_worker(config: InferenceConfig) -> None:
    global _WORKER
    _WORKER = PhotoAnalyzer.load(config)


def _score_in_worker(
    job: tuple[int, int, int, Variant, Path | None],
) -> tuple[SceneScore, list[tuple[float, bool]]]:
    assert _WORKER is not None, "pool worker without an analyzer"
    seed, width, height, variant, cache = job
    return score_scene(_WORKER, seed, width, height, variant, cache)


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
    cache: Path | None = None,
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
        results = pool.map(_score_in_worker, [(s, width, height, variant, cache) for s in chosen])
    else:
        results = (score_scene(analyzer, s, width, height, variant, cache) for s in chosen)
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
    by_foliage: dict[str, tuple[int, int]] = {}
    for s in scores:
        for name, (found, total) in s.foliage.items():
            f0, t0 = by_foliage.get(name, (0, 0))
            by_foliage[name] = (f0 + found, t0 + total)
    return EvaluationReport(
        false_pct=round(100.0 * sum(s.false_detections for s in scores) / max(positives, 1), 3),
        false_empty_pct=round(100.0 * sum(s.false_empty for s in scores) / max(positives, 1), 3),
        recall_by_foliage={
            name: round(found / total, 4) for name, (found, total) in sorted(by_foliage.items())
        },
        plants_by_foliage={name: total for name, (_, total) in sorted(by_foliage.items())},
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
    cfg = config or InferenceConfig(
        providers=["CPUExecutionProvider"],
        pool_processes=1,
        warmup=False,  # one, here
    )
    return PhotoAnalyzer.load(cfg)
