"""Accuracy metrics of the evaluation command, on hand-checked cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation.metrics import (
    EvaluationReport,
    average_precision,
    centred_in,
    count_duplicates,
    false_detections,
    match_detections,
)
from pipeline.evaluation.report import EvalSet, parse_set, parse_size, resolve_sets
from pipeline.evaluation.truth import cache_path, generator_version, photo_truth


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


def test_duplicates_count_extra_detections_on_one_plant() -> None:
    truth = np.array([[0, 0, 40, 40], [100, 0, 140, 40], [200, 0, 240, 40]], dtype=np.float64)
    boxes = np.array(
        [
            [0, 0, 40, 40],  # plant 0
            [0, 0, 20, 40],  # a fragment of plant 0 (IoU 0.5, but plant 0 is taken): duplicate
            [1, 1, 41, 41],  # plant 0 again: a duplicate
            [100, 0, 140, 40],  # plant 1
            [300, 300, 320, 320],  # matches nothing: a false positive, not a duplicate
            [170, 0, 210, 40],  # between plant 1 (matched) and missed plant 2: not a duplicate
        ],
        dtype=np.float64,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.9, 0.6, 0.5])
    assert count_duplicates(boxes, scores, truth) == 2
    assert count_duplicates(boxes[[0, 3]], scores[[0, 3]], truth) == 0
    assert count_duplicates(np.zeros((0, 4)), np.zeros(0), truth) == 0


def test_sizes_and_sets_parse() -> None:
    assert parse_size("4000x3000") == (4000, 3000)
    assert parse_size("2000×1500") == (2000, 1500)
    assert parse_set("wide@4000x3000") == EvalSet("wide", 4000, 3000)
    assert parse_set("classic") == EvalSet("classic", 2000, 1500)
    assert EvalSet("wide", 4000, 3000).label == "wide@4000x3000"
    for bad in ("4000", "axb"):
        with pytest.raises(ValueError, match="look like"):
            parse_size(bad)
    with pytest.raises(ValueError, match="too small"):
        parse_size("10x10")
    with pytest.raises(ValueError, match="classic"):
        parse_set("fancy@100x100")
    assert resolve_sets(None, None, "classic", None, None) == [EvalSet("classic", 2000, 1500)]
    assert resolve_sets(None, ["2000x1500", "4000x3000"], "wide", None, None) == [
        EvalSet("wide", 2000, 1500),
        EvalSet("wide", 4000, 3000),
    ]
    assert resolve_sets(None, None, "wide", 1000, 800) == [EvalSet("wide", 1000, 800)]
    assert resolve_sets(["classic@800x600", "wide"], ["4000x3000"], "classic", None, None) == [
        EvalSet("classic", 800, 600),
        EvalSet("wide", 2000, 1500),
    ]
    with pytest.raises(ValueError, match="variant"):
        resolve_sets(None, None, "other", None, None)


def test_false_detections_lie_on_no_plant_and_empty_cells_are_told_apart() -> None:
    truth = np.array([[0, 0, 40, 40], [100, 0, 140, 40]], dtype=np.float64)
    boxes = np.array(
        [
            [0, 0, 40, 40],  # a plant
            [30, 30, 60, 60],  # overlaps plant 0 a little (IoU ≥ 0.1? no, but centre off)
            [200, 200, 230, 230],  # on nothing, in an empty cell
            [400, 0, 420, 20],  # on nothing, elsewhere
            [110, 10, 130, 30],  # inside plant 1's box: a fragment, not a false detection
        ],
        dtype=np.float64,
    )
    false = false_detections(boxes, truth)
    assert false.tolist() == [False, True, True, True, False]
    empty = np.array([[190, 190, 240, 240]], dtype=np.float64)
    assert (false & centred_in(boxes, empty)).tolist() == [False, False, True, False, False]
    assert false_detections(np.zeros((0, 4)), truth).shape == (0,)
    assert false_detections(boxes, np.zeros((0, 4))).all()


def test_recall_of_foliage_groups_pools_their_plants() -> None:
    report = EvaluationReport(
        scenes=1,
        width=1,
        height=1,
        first_seed=0,
        plants=10,
        ap50=0,
        mape_total=0,
        mae_total=0,
        mape_detection_only=0,
        mae_detection_only=0,
        seconds_per_scene=0,
        recall_by_foliage={"red": 0.5, "purple": 1.0, "green": 0.9},
        plants_by_foliage={"red": 4, "purple": 1, "green": 10},
    )
    assert report.recall_of(frozenset({"red", "purple"})) == pytest.approx(3 / 5)
    assert report.recall_of(frozenset({"silver"})) is None


def test_a_cached_photo_is_the_generated_one(tmp_path: Path) -> None:
    first = photo_truth(7, 640, 480, "trays", tmp_path)
    (path,) = tmp_path.glob("synth-*/*.npz")
    assert path == cache_path(tmp_path, 7, 640, 480, "trays")
    assert path.parent.name == f"synth-{generator_version()}"
    again = photo_truth(7, 640, 480, "trays", tmp_path)
    fresh = photo_truth(7, 640, 480, "trays")
    for other in (again, fresh):
        assert other.jpeg == first.jpeg
        np.testing.assert_array_equal(other.boxes, first.boxes)
        np.testing.assert_array_equal(other.visibility, first.visibility)
        np.testing.assert_array_equal(other.empty, first.empty)
        assert other.foliage == first.foliage
    assert len(first.foliage) == len(first.boxes) > 0
