"""Before/after table of two ``plantpipe evaluate --json`` runs on the same sets and seeds.

    python -m bench.accuracy_compare BEFORE.json AFTER.json [--labels before after]

Prints one markdown row per set: MAPE, worst scene, false detections (on empty cells), and
detection recall of green and of red/purple/bronze plants, before → after, plus whether the
issue's targets hold (MAPE ≤ 5 %, worst ≤ 15 %, false on empty cells ≤ 1 %, red/purple
recall within 3 points of green).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.evaluation.metrics import EvaluationReport
from pipeline.synth.foliage import RED_PURPLE

GREEN = frozenset({"green"})


def load(path: Path) -> dict[str, EvaluationReport]:
    """Set label → its summary."""
    rows = json.loads(path.read_text())
    return {row.pop("set"): EvaluationReport.model_validate(row) for row in rows}


def _recall(r: EvaluationReport, groups: frozenset[str]) -> str:
    value = r.recall_of(groups)
    return "–" if value is None else f"{value:.3f}"


def targets_met(r: EvaluationReport) -> str:
    """Which of the issue's targets a set misses ("all met" when none)."""
    missed = []
    if r.mape_total > 5.0:
        missed.append("MAPE")
    if abs(r.worst_error_pct) > 15.0:
        missed.append("worst")
    if r.false_empty_pct > 1.0:
        missed.append("empty cells")
    green, red = r.recall_of(GREEN), r.recall_of(RED_PURPLE)
    if green is not None and red is not None and green - red > 0.03:
        missed.append("red/purple recall")
    return "all met" if not missed else "missed: " + ", ".join(missed)


def _pair(
    before: EvaluationReport | None,
    after: EvaluationReport,
    show: Callable[[EvaluationReport], str],
) -> str:
    return show(after) if before is None else f"{show(before)} → {show(after)}"


def table(before: dict[str, EvaluationReport], after: dict[str, EvaluationReport]) -> str:
    """One markdown row per set of ``after`` (before → after where ``before`` has the set)."""
    lines = [
        "| set | MAPE | worst scene | false on empty cells | recall green | recall red/purple "
        "| targets (after) |",
        "|---|---|---|---|---|---|---|",
    ]
    columns: list[Callable[[EvaluationReport], str]] = [
        lambda r: f"{r.mape_total:.1f}%",
        lambda r: f"{r.worst_error_pct:+.1f}%",
        lambda r: f"{r.false_empty_pct:.2f}%",
        lambda r: _recall(r, GREEN),
        lambda r: _recall(r, RED_PURPLE),
    ]
    for label, a in after.items():
        cells = [_pair(before.get(label), a, show) for show in columns]
        lines.append(f"| `{label}` | " + " | ".join(cells) + f" | {targets_met(a)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.accuracy_compare", description=__doc__)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    print(table(load(args.before), load(args.after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
