"""``plantpipe evaluate``: the command-line glue of :mod:`pipeline.evaluation` (options,
progress lines, the Markdown result and the optional report file)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.output import out, say
from pipeline.settings import get_settings


def evaluate(
    scenes: Annotated[int, typer.Option(help="held-out synthetic scenes", min=1)] = 50,
    seed: Annotated[int, typer.Option(help="seed of the first scene")] = 100_000,
    size: Annotated[
        list[str] | None,
        typer.Option(help="photo size WxH, e.g. 4000x3000; repeat for several sizes"),
    ] = None,
    variant: Annotated[
        str,
        typer.Option(
            help="scene generator: classic (training-like), wide, or a condition: angled, "
            "trays, foliage, lighting, mixed, pots"
        ),
    ] = "classic",
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="VARIANT@WxH (e.g. wide@4000x3000); repeatable; overrides --size"
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="processes generating and analysing scenes at once")
    ] = 1,
    width: Annotated[
        int | None, typer.Option(min=64, help="photo width (with --height; or use --size)")
    ] = None,
    height: Annotated[int | None, typer.Option(min=64)] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="also write the result, with command, models and per-scene rows, here"),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="keep generated photos and their truth here; reuse them next time"),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="also write each set's summary as JSON here (for comparing)"),
    ] = None,
) -> None:
    """Accuracy of the configured models on held-out synthetic scenes (AP50, count MAPE,
    worst scene, duplicates), per generator variant and photo size."""
    from pipeline.evaluation.metrics import SceneScore
    from pipeline.evaluation.report import EvalSet, report_document, resolve_sets, run_sets
    from pipeline.evaluation.scenes import default_analyzer
    from pipeline.inference.config import InferenceConfig

    try:
        chosen = resolve_sets(sets, size, variant, width, height)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    from pipeline.inference.onnx_sessions import collected_fallbacks

    settings = get_settings()
    config = InferenceConfig.from_settings(settings).model_copy(update={"warmup": False})
    if jobs == 1 and "intra_op_threads" not in settings.model_fields_set:
        # one analyzer in this process: every core to ONNX Runtime (the workers' auto
        # setting splits the cores between pool processes)
        config = config.model_copy(update={"intra_op_threads": 0})
    with collected_fallbacks() as fallbacks:  # one line, not one per model session
        analyzer = default_analyzer(config)
    for note in fallbacks:
        say(f"warning: {note}")

    def progress(which: EvalSet, score: SceneScore) -> None:
        say(
            f"{which.label} seed {score.seed}: truth {score.truth}, detected {score.detected}, "
            f"estimated {score.estimated}, error {score.error_pct:+.1f}% ({score.seconds:.1f}s)"
        )

    started = time.time()
    runs = run_sets(
        analyzer, chosen, scenes=scenes, first_seed=seed, progress=progress, jobs=jobs, cache=cache
    )
    for result, _ in runs:
        out.print(result.markdown())
    if report is not None:
        command = "plantpipe evaluate" + "".join(f" {a}" for a in sys.argv[2:])
        document = report_document(
            runs, analyzer, command=command, started=started, wall_s=time.time() - started
        )
        report.write_text(document)
        say(f"report written to {report}")
    if json_path is not None:
        summaries = [
            {"set": f"{r.variant}@{r.width}x{r.height}", **r.model_dump()} for r, _ in runs
        ]
        json_path.write_text(json.dumps(summaries, indent=1) + "\n")
        say(f"summaries written to {json_path}")
