"""What an evaluation measures: AP50 of the detections, count error, duplicates, per scene
and per set (``SceneScore``, ``EvaluationReport``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
    #: detections on no plant at all (IoU < 0.1 with every plant, centre in no plant's box)
    false_detections: int = 0
    #: of those, the ones centred in an empty cell of a cell tray or an empty pot
    false_empty: int = 0
    #: foliage group → (clearly visible plants detected at IoU ≥ 0.5, clearly visible plants)
    foliage: dict[str, tuple[int, int]] = field(default_factory=dict)

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
    false_pct: float = 0.0
    false_empty_pct: float = 0.0
    #: foliage group → detection recall (IoU ≥ 0.5) of its clearly visible plants
    recall_by_foliage: dict[str, float] = {}
    plants_by_foliage: dict[str, int] = {}

    def recall_of(self, groups: frozenset[str]) -> float | None:
        """Detection recall over the plants of ``groups`` together (None: no such plant)."""
        total = sum(self.plants_by_foliage.get(g, 0) for g in groups)
        if total == 0:
            return None
        found = sum(
            self.recall_by_foliage.get(g, 0.0) * self.plants_by_foliage.get(g, 0) for g in groups
        )
        return found / total

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
                f"| false detections (share of plants) | {self.false_pct:.2f}% | |",
                f"| … on empty cells and pots | {self.false_empty_pct:.2f}% | |",
                *(
                    f"| recall of {name} plants ({self.plants_by_foliage[name]}) | {recall:.3f} | |"
                    for name, recall in self.recall_by_foliage.items()
                ),
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


def match_one_to_one(
    boxes: NDArray[np.float64],
    scores: NDArray[np.float64],
    truth: NDArray[np.float64],
    iou: float = 0.5,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Greedy one-to-one matching, best score first, at IoU ≥ ``iou``: which plants were
    matched and which detections matched one."""
    matched = np.zeros(len(truth), dtype=bool)
    hits = np.zeros(len(boxes), dtype=bool)
    if len(truth) == 0:
        return matched, hits
    for i in np.argsort(-scores, kind="stable"):
        overlap = match_metric(boxes[i], truth, "iou")
        overlap[matched] = -1.0
        best = int(np.argmax(overlap))
        if overlap[best] >= iou:
            matched[best] = True
            hits[i] = True
    return matched, hits


def match_detections(
    boxes: NDArray[np.float64], scores: NDArray[np.float64], truth: NDArray[np.float64]
) -> list[tuple[float, bool]]:
    """Greedy matching at IoU ≥ 0.5, best score first; each truth matched once:
    ``(score, hit)`` per detection, best score first."""
    _, hits = match_one_to_one(boxes, scores, truth)
    return [(float(scores[i]), bool(hits[i])) for i in np.argsort(-scores, kind="stable")]


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
    matched, hits = match_one_to_one(boxes, scores, truth)
    duplicates = 0
    for i in np.flatnonzero(~hits):
        iou = match_metric(boxes[i], truth, "iou")
        best = int(np.argmax(iou))
        if iou[best] < 0.25 or not matched[best]:
            continue
        if np.any(iou[~matched] >= 0.25):
            continue
        duplicates += 1
    return duplicates


def false_detections(boxes: NDArray[np.float64], truth: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Detections on no plant: IoU < 0.1 with every plant and a centre in no plant's box."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=bool)
    if len(truth) == 0:
        return np.ones(len(boxes), dtype=bool)
    out = np.zeros(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if match_metric(boxes[i], truth, "iou").max() >= 0.1:
            continue
        out[i] = not centred_in(boxes[i : i + 1], truth)[0]
    return out


def centred_in(boxes: NDArray[np.float64], areas: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Whether each box's centre lies in any of ``areas`` (x1, y1, x2, y2)."""
    if len(boxes) == 0 or len(areas) == 0:
        return np.zeros(len(boxes), dtype=bool)
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None]
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None]
    a = areas[None, :, :]
    inside = (a[..., 0] <= cx) & (cx < a[..., 2]) & (a[..., 1] <= cy) & (cy < a[..., 3])
    return np.asarray(inside.any(axis=1), dtype=bool)
