"""The band-estimation bench's report: medians per side, and counts compared across sides."""

from __future__ import annotations

from typing import Any

from bench.estimate_stage import counts, report, summary


def _row(photo: int, cpu: float, wall: float, detected: int) -> dict[str, Any]:
    return {
        "photo": photo,
        "estimate_wall_ms": wall,
        "estimate_parts_cpu_ms": {"estimate_regions": cpu * 0.75, "supported": cpu * 0.25},
        "analysis_cpu_ms": 1000.0,
        "detected": detected,
        "estimated": 2,
    }


def test_medians_sum_the_parts_and_counts_are_per_photo() -> None:
    rows = [_row(0, 100, 120, 5), _row(1, 300, 310, 7), _row(0, 200, 220, 5)]
    assert summary(rows)["cpu_ms"] == 200
    assert summary(rows)["wall_ms"] == 220
    assert counts(rows) == [(5, 2), (7, 2)]


def test_the_report_says_when_the_sides_count_differently() -> None:
    before = [_row(0, 300, 300, 5)]
    same = report(
        {"before": before, "after": [_row(0, 150, 150, 5)]}, {"before": "a", "after": "b"}, 1, 1
    )
    assert "2.00× less" in same
    assert "count the same plants" in same
    differ = report(
        {"before": before, "after": [_row(0, 150, 150, 6)]}, {"before": "a", "after": "b"}, 1, 1
    )
    assert "counts differ" in differ
