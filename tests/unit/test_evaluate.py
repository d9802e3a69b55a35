"""Accuracy metrics of the evaluation command, on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluate import average_precision, match_detections


def test_perfect_detections_have_ap_one() -> None:
    assert average_precision([(0.9, True), (0.8, True)], positives=2) == pytest.approx(1.0)


def test_ap_of_a_mixed_ranking() -> None:
    # ranks: TP, FP, TP over 2 truths → precision 1 @ r .5, 2/3 @ r 1 → AP = .5·1 + .5·2/3
    ap = average_precision([(0.9, True), (0.8, False), (0.7, True)], positives=2)
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_missed_truths_cap_recall() -> None:
    assert average_precision([(0.9, True)], positives=4) == pytest.approx(0.25)


def test_matching_is_one_to_one_at_iou_half() -> None:
    truth = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], dtype=np.float64)
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 26, 10]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7])
    hits = match_detections(boxes, scores, truth)
    # second box duplicates the first truth; third has IoU 0.6 with the second truth
    assert hits == [(0.9, True), (0.8, False), (0.7, True)]
