"""Evaluation sets (``VARIANT@WxH``) from the command line, run in turn, and the markdown
document of their results (bench/ACCURACY.md)."""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.evaluation.metrics import EvaluationReport, SceneScore
from pipeline.evaluation.scenes import evaluate
from pipeline.inference.analyze import PhotoAnalyzer
from pipeline.synth.foliage import RED_PURPLE
from pipeline.synth.scene import VARIANTS, Variant


def _sha256(path: Path | None) -> str:
    if path is None:
        return "none"
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: a generator variant at one photo size."""

    variant: Variant
    width: int
    height: int

    @property
    def label(self) -> str:
        return f"{self.variant}@{self.width}x{self.height}"


def parse_size(text: str) -> tuple[int, int]:
    """``"4000x3000"`` → ``(4000, 3000)``; raises ValueError otherwise."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size must look like 2000x1500, got {text!r}")
    width, height = (int(p) for p in parts)
    if width < 64 or height < 64:
        raise ValueError(f"size {width}x{height} is too small (64 px at least)")
    return width, height


def parse_set(text: str) -> EvalSet:
    """``"wide@4000x3000"`` (or ``"classic"``, size 2000×1500) → an :class:`EvalSet`."""
    name, _, size = text.partition("@")
    variant = next((v for v in VARIANTS if v == name), None)
    if variant is None:
        names = ", ".join(VARIANTS)
        raise ValueError(f"set must be VARIANT[@WxH], VARIANT one of {names}; got {text!r}")
    width, height = parse_size(size) if size else (2000, 1500)
    return EvalSet(variant, width, height)


Run = tuple[EvaluationReport, Sequence[SceneScore]]


def _recalls(report: EvaluationReport) -> str:
    green = report.recall_of(frozenset({"green"}))
    red = report.recall_of(RED_PURPLE)
    return " / ".join("–" if r is None else f"{r:.3f}" for r in (green, red))


def report_document(
    runs: Sequence[Run],
    analyzer: PhotoAnalyzer,
    *,
    command: str,
    started: float,
    wall_s: float,
) -> str:
    """The evaluation as a markdown document: provenance, then per set the summary and one
    row per scene."""
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
        "band estimation's count of plants not detected; duplicates = detections that count "
        "a plant already counted (left over by the one-to-one matching at IoU ≥ 0.5, on a "
        "matched plant by IoU ≥ 0.25, near no missed plant); outside segments = detections "
        "whose centre lies in no container segment (counted, segment index none)",
        "- Settings: "
        + ", ".join(
            f"{name} {getattr(analyzer.config, name)}"
            for name in (
                "slice_size",
                "slice_overlap",
                "det_conf",
                "det_iou",
                "det_max_per_slice",
                "merge_ios",
                "merge_within_slice",
                "merge_large_px",
                "merge_ios_large",
                "slice_edge_margin_px",
                "rescale_slices",
                "rescale_min_px",
                "rescale_max_px",
                "rescale_small_target_px",
                "rescale_large_target_px",
                "rescale_small_gain",
                "segment_merge_overlap",
                "segment_crop_pad",
                "count_unassigned",
                "unassigned_slice_fraction",
                "default_plant_area_px",
            )
        ),
    ]
    if len(runs) > 1:
        lines += [
            "",
            "| set | scenes | plants | MAPE | MAE | worst scene | duplicates | false "
            "(empty cells) | recall green / red-purple | AP50 | s/scene |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for report, _ in runs:
            lines.append(
                f"| `{report.variant}` {report.width}×{report.height} | {report.scenes} | "
                f"{report.plants} | {report.mape_total:.1f}% | {report.mae_total:.1f} | "
                f"{report.worst_seed}: {report.worst_error_pct:+.1f}% | "
                f"{report.duplicates_pct:.2f}% | {report.false_pct:.2f}% "
                f"({report.false_empty_pct:.2f}%) | {_recalls(report)} | {report.ap50:.3f} | "
                f"{report.seconds_per_scene:.2f} |"
            )
    for report, scores in runs:
        lines += [
            "",
            f"## `{report.variant}` scenes at {report.width}×{report.height}",
            "",
            report.markdown(),
            "",
            "| seed | true plants | detected | estimated | detected + estimated | error | "
            "duplicates | false (empty cells) | outside segments | s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in scores:
            lines.append(
                f"| {s.seed} | {s.truth} | {s.detected} | {s.estimated} | {s.total} | "
                f"{s.error_pct:+.1f}% | {s.duplicates} | {s.false_detections} ({s.false_empty}) "
                f"| {s.unassigned} | {s.seconds:.1f} |"
            )
    return "\n".join(lines) + "\n"


def run_sets(
    analyzer: PhotoAnalyzer,
    sets: Sequence[EvalSet],
    *,
    scenes: int,
    first_seed: int,
    progress: Callable[[EvalSet, SceneScore], None] | None = None,
    jobs: int = 1,
    cache: Path | None = None,
) -> list[Run]:
    """:func:`evaluate` on each set in turn (same seeds), with its per-scene scores."""
    runs: list[Run] = []
    for chosen in sets:
        scores: list[SceneScore] = []

        def record(
            score: SceneScore, chosen: EvalSet = chosen, scores: list[SceneScore] = scores
        ) -> None:
            scores.append(score)
            if progress is not None:
                progress(chosen, score)

        report = evaluate(
            analyzer,
            scenes=scenes,
            first_seed=first_seed,
            width=chosen.width,
            height=chosen.height,
            variant=chosen.variant,
            progress=record,
            jobs=jobs,
            cache=cache,
        )
        runs.append((report, scores))
    return runs


def resolve_sets(
    sets: Sequence[str] | None,
    sizes: Sequence[str] | None,
    variant: str,
    width: int | None,
    height: int | None,
) -> list[EvalSet]:
    """The sets a command line asks for: ``--set`` entries; else ``--variant`` at each
    ``--size`` (or ``--width``/``--height``, default 2000×1500). Raises ValueError."""
    if sets:
        return [parse_set(s) for s in sets]
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    dims = [parse_size(s) for s in sizes] if sizes else [(width or 2000, height or 1500)]
    return [parse_set(f"{variant}@{w}x{h}") for w, h in dims]
