"""What an evaluation measures: AP50 of the detections, count error, duplicates, per scene
and per set (``SceneScore``, ``EvaluationReport``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

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
