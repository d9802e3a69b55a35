"""Accuracy on held-out synthetic scenes: detection AP50 and count error.

    plantpipe evaluate --scenes 50 --seed 100000 [--width 2000 --height 1500]

Each scene is generated (seeded), JPEG-encoded, and analysed by the same ``PhotoAnalyzer``
the gpu workers run (segmentation, sliced detection, band estimation). Reported:

* detection AP50 — all-point interpolated average precision at IoU 0.5 over every plant;
* count error of detected + estimated vs the true plant count per scene (MAPE and MAE), the
  same for detection alone, and how much band estimation lowers the error.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import time
from collections.abc import Callable, Sequence
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
from pipeline.vision.merge import match_metric


@dataclass(frozen=True)
class SceneScore:
    seed: int
    truth: int
    detected: int
    estimated: int
    seconds: float

    @property
    def total(self) -> int:
        return self.detected + self.estimated


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

    @property
    def improvement_pp(self) -> float:
        """Percentage points of MAPE that band estimation removes."""
        return self.mape_detection_only - self.mape_total

    def markdown(self) -> str:
        return "\n".join(
            [
                f"{self.scenes} held-out synthetic scenes ({self.width}×{self.height}, seeds "
                f"{self.first_seed}…{self.first_seed + self.scenes - 1}), {self.plants} plants.",
                "",
                "| metric | detection only | detection + band estimation |",
                "|---|---|---|",
                f"| count MAPE | {self.mape_detection_only:.1f}% | {self.mape_total:.1f}% |",
                f"| count MAE (plants/scene) | {self.mae_detection_only:.1f} | "
                f"{self.mae_total:.1f} |",
                f"| detection AP50 | {self.ap50:.3f} | |",
                "",
                f"Band estimation lowers MAPE by {self.improvement_pp:.1f} percentage points; "
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


def encode(scene: Scene, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def evaluate(
    analyzer: PhotoAnalyzer,
    *,
    scenes: int = 50,
    first_seed: int = 100_000,
    width: int = 2000,
    height: int = 1500,
    progress: Callable[[SceneScore], None] | None = None,
) -> EvaluationReport:
    all_hits: list[tuple[float, bool]] = []
    positives = 0
    scores: list[SceneScore] = []
    for seed in range(first_seed, first_seed + scenes):
        scene = generate_scene(seed, width, height)
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
        all_hits.extend(match_detections(boxes, confidences, truth))
        positives += len(truth)
        score = SceneScore(seed, len(truth), analysis.total_detected, analysis.total_estimated,
                           elapsed)  # fmt: skip
        scores.append(score)
        if progress is not None:
            progress(score)
    truths = np.array([s.truth for s in scores], dtype=np.float64)
    totals = np.array([s.total for s in scores], dtype=np.float64)
    detected = np.array([s.detected for s in scores], dtype=np.float64)
    safe = np.maximum(truths, 1.0)
    return EvaluationReport(
        scenes=scenes,
        width=width,
        height=height,
        first_seed=first_seed,
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


def report_document(
    report: EvaluationReport,
    scores: Sequence[SceneScore],
    analyzer: PhotoAnalyzer,
    *,
    command: str,
    started: float,
    wall_s: float,
) -> str:
    """The evaluation as a markdown document: provenance, the summary, one row per scene."""
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
        "band estimation's count of plants not detected",
        "",
        report.markdown(),
        "",
        "| seed | true plants | detected | estimated | detected + estimated | error | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        error = (s.total - s.truth) / max(s.truth, 1) * 100
        lines.append(
            f"| {s.seed} | {s.truth} | {s.detected} | {s.estimated} | {s.total} | "
            f"{error:+.1f}% | {s.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"
