"""Band estimation's stage of the analysis, CPU per 12 MP photo, before and after a change:

    python -m bench.estimate_stage [--before REV] [--scenes 3] [--reps 3] [--out FILE]

Runs :class:`pipeline.inference.analyze.PhotoAnalyzer` (bundled models, CPU provider, one
ONNX thread, one numba thread) in a fresh process per side on the same synthetic
4000×3000 JPEGs (``pipeline.synth.generate_scene`` seeds 0…, cached in
``/tmp/plantpipe-bench-scenes``), and measures the stage the analysis times as
``estimate`` — learning the photo's plant colours, the sanity check of every detection,
band estimation of every segment, the alternative passes — as process CPU time (every
thread), which a busy machine inflates far less than wall time. Wall time of the stage is
reported too. ``--before REV`` runs the same probe against a scratch worktree of ``REV``
(its own code, the same photos) and checks that both sides count the same plants.
Writes ``bench/ESTIMATE.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.cluster import scene_photo
from bench.common import git_revision, machine
from bench.endtoend import SCENE_CACHE
from bench.harness import BENCH_DIR, REPO

COMMAND: Final = "python -m bench.estimate_stage"

#: Run in the side's own interpreter with PYTHONPATH set to the side's tree: JSON on stdout.
PROBE: Final = r"""
import json, sys, time
from pathlib import Path
import pipeline.inference.analyze as analyze
from pipeline.evaluation.scenes import default_analyzer

PARTS = ("learn_photo_colours", "estimate_regions", "weigh_alternatives", "detections_of")
spent = {}

def timed(name):
    inner = getattr(analyze, name)
    def call(*args, **kwargs):
        start = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.process_time() - start
    return call

for name in PARTS:
    if hasattr(analyze, name):
        setattr(analyze, name, timed(name))
try:  # the sanity check of each detection (a method of the learned colours)
    from pipeline.inference.colours import PhotoColours
    check = PhotoColours.supported
    def supported(self, *args, **kwargs):
        start = time.process_time()
        try:
            return check(self, *args, **kwargs)
        finally:
            spent["supported"] = spent.get("supported", 0.0) + time.process_time() - start
    PhotoColours.supported = supported
except ImportError:
    pass
photos = [Path(p).read_bytes() for p in sys.argv[2:]]
reps = int(sys.argv[1])
analyzer = default_analyzer()
analyzer.warmup()
analyzer.analyze(photos[0])  # first-photo costs (caches, allocations) out of the figures
rows = []
for rep in range(reps):
    for i, data in enumerate(photos):
        spent.clear()
        cpu = time.process_time()
        out = analyzer.analyze(data)
        a = out.analysis
        rows.append({
            "photo": i,
            "estimate_wall_ms": a.timings_ms["estimate"],
            "estimate_parts_cpu_ms": {k: v * 1000.0 for k, v in spent.items()},
            "analysis_cpu_ms": (time.process_time() - cpu) * 1000.0,
            "detected": len(a.detections),
            "estimated": sum(e.estimated for e in a.estimations),
        })
print(json.dumps(rows))
"""


def scene_files(n: int) -> list[Path]:
    """``n`` cached 4000×3000 synthetic JPEGs (``bench.cluster.scene_photo``, made on first
    use, in the end-to-end section's scene cache)."""
    SCENE_CACHE.mkdir(parents=True, exist_ok=True)
    files = []
    for seed in range(n):
        path = SCENE_CACHE / f"estimate-4000x3000-{seed}.jpg"
        if not path.is_file():
            path.write_bytes(scene_photo(4000, 3000, seed))
        files.append(path)
    return files


def probe(tree: Path, photos: Sequence[Path], reps: int) -> list[dict[str, Any]]:
    """The probe's rows, run with ``tree``'s code."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "OMP_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(reps), *map(str, photos)],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    rows: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Medians per photo: the stage's CPU (its parts summed), its wall time."""
    cpu = [sum(r["estimate_parts_cpu_ms"].values()) for r in rows]
    return {
        "cpu_ms": statistics.median(cpu),
        "wall_ms": statistics.median(r["estimate_wall_ms"] for r in rows),
        "analysis_cpu_ms": statistics.median(r["analysis_cpu_ms"] for r in rows),
    }


def counts(rows: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    first = {r["photo"]: (r["detected"], r["estimated"]) for r in reversed(rows)}
    return [first[i] for i in sorted(first)]


def worktree(rev: str, where: Path) -> Path:
    path = where / "before"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), rev],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return path


def report(
    sides: dict[str, list[dict[str, Any]]], revisions: dict[str, str], photos: int, reps: int
) -> str:
    lines = [
        "# Band estimation stage: CPU per 12 MP photo",
        "",
        f"- Command: `{COMMAND}"
        + (f" --before {revisions['before']}" if "before" in revisions else "")
        + f" --scenes {photos} --reps {reps}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}; "
        f"load average at the start {os.getloadavg()[0]:.1f}",
        f"- Photos: {photos} synthetic 4000×3000 JPEGs (`pipeline.synth.generate_scene` seeds "
        f"0–{photos - 1}), each analysed {reps} times after a warm-up photo; bundled models, "
        "CPUExecutionProvider, one ONNX and one numba thread, one process per side.",
        "- CPU: process time of the stage's parts (plant colours learned from the "
        "detections, the sanity check of every detection, band estimation of every segment, "
        "the alternative passes, the detections' records). Medians over every photo and "
        "repetition.",
        "",
        "| side | revision | estimate stage CPU (ms, median) | its wall time (ms, median) "
        "| whole analysis CPU (ms, median) | plants per photo (detected, estimated) |",
        "|---|---|---|---|---|---|",
    ]
    for side, rows in sides.items():
        s = summary(rows)
        lines.append(
            f"| {side} | {revisions[side]} | {s['cpu_ms']:.0f} | {s['wall_ms']:.0f} | "
            f"{s['analysis_cpu_ms']:.0f} | {counts(rows)} |"
        )
    if len(sides) == 2:
        before, after = (summary(rows) for rows in sides.values())
        same = counts(sides["before"]) == counts(sides["after"])
        lines += [
            "",
            f"Stage CPU {before['cpu_ms']:.0f} → {after['cpu_ms']:.0f} ms per photo "
            f"({before['cpu_ms'] / max(after['cpu_ms'], 1e-9):.2f}× less); "
            + (
                "both sides count the same plants on every photo."
                if same
                else "**the sides' counts differ** (see the table)."
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    ap.add_argument("--before", help="a git revision to measure beside this checkout")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "ESTIMATE.md")
    args = ap.parse_args(argv)
    photos = scene_files(args.scenes)
    sides: dict[str, list[dict[str, Any]]] = {}
    revisions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="plantpipe-estimate-") as scratch:
        if args.before:
            tree = worktree(args.before, Path(scratch))
            try:
                revisions["before"] = args.before
                sides["before"] = probe(tree, photos, args.reps)
            finally:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(tree)],
                    cwd=REPO,
                    capture_output=True,
                )
        revisions["after"] = git_revision() or "this checkout"
        sides["after"] = probe(REPO, photos, args.reps)
    text = report(sides, revisions, args.scenes, args.reps)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
