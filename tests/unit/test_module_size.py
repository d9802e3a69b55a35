"""No module of ``pipeline/`` or ``workers/`` over :data:`MAX_LINES` lines."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 400


def test_no_module_over_the_line_limit() -> None:
    paths = [
        path
        for root in ("pipeline", "workers")
        for path in sorted((REPO / root).rglob("*.py"))
        if not any(p.startswith(".") or p == "__pycache__" for p in path.relative_to(REPO).parts)
    ]
    assert len(paths) > 100, "the modules were not found"
    over = sorted(
        (lines, str(path.relative_to(REPO)))
        for path in paths
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    )
    assert not over, f"modules over {MAX_LINES} lines: " + ", ".join(
        f"{name} ({lines})" for lines, name in reversed(over)
    )
