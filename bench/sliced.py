"""Batched sliced detection vs one slice per device call, same model, same photo.

    python -m bench.sliced [--reps 5] [--width 4000 --height 3000]

Uses the bundled default models when present (pipeline/models), else the YOLO-layout
fixture models of the test suite. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Stat
from pipeline.inference.analyze import PhotoAnalyzer
from pipeline.inference.config import BUNDLED_DET_MODEL, BUNDLED_SEG_MODEL, InferenceConfig


def analyzer_and_photo(width: int, height: int, seed: int) -> tuple[PhotoAnalyzer, np.ndarray, str]:
    if BUNDLED_DET_MODEL.exists() and BUNDLED_SEG_MODEL.exists():
        from pipeline.synth import generate_scene

        config = InferenceConfig(providers=["CPUExecutionProvider"], warmup=False)
        rgb = generate_scene(seed, width, height).image
        return PhotoAnalyzer.load(config), rgb, "bundled default models, synthetic scene"
    from pipeline.testing.onnx_fixtures import (
        build_detect_model,
        build_segment_model,
        make_nursery_photo,
    )

    root = Path(tempfile.mkdtemp(prefix="plantpipe-bench-"))
    seg = build_segment_model(root / "seg.onnx", input_size=320, batch=1)
    det = build_detect_model(root / "det.onnx", input_size=512)
    config = InferenceConfig(
        seg_model_path=seg, seg_input_size=320, det_model_path=det,
        providers=["CPUExecutionProvider"], warmup=False,
    )  # fmt: skip
    trays = ((100, 100, width // 2 - 50, height - 100), (width // 2 + 50, 100, width - 100,
             height - 100))  # fmt: skip
    rgb = make_nursery_photo(width, height, trays, seed=seed, skip=0.3).rgb
    return PhotoAnalyzer.load(config), rgb, "fixture YOLO-layout models (pipeline/testing)"


def run(reps: int, width: int, height: int, seed: int = 11) -> str:
    analyzer, rgb, source = analyzer_and_photo(width, height, seed)
    h, w = rgb.shape[:2]
    _segments, regions = analyzer.segments_and_regions(analyzer.segment(rgb), w, h)
    analyzer.detect_sliced(rgb, regions, batched=True)  # warm-up both paths
    analyzer.detect_sliced(rgb, regions, batched=False)
    times: dict[bool, list[float]] = {True: [], False: []}
    outputs = {}
    n_slices = 0
    for _ in range(reps):
        for in_batches in (True, False):
            t0 = time.perf_counter()
            found, n_slices = analyzer.detect_sliced(rgb, regions, batched=in_batches)
            times[in_batches].append(time.perf_counter() - t0)
            outputs[in_batches] = found
    same = all(
        np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
        for a, b in zip(outputs[True], outputs[False], strict=True)
    )
    detections = sum(len(r.boxes) for r in outputs[True])
    batched, single = Stat.of(times[True]), Stat.of(times[False])
    lines = [
        f"Photo {w}×{h}, {len(regions)} segments, {n_slices} slices of "
        f"{analyzer.config.slice_size} px, {source}, provider {analyzer.provider}, "
        f"batch size {analyzer.config.det_batch_size}.",
        "",
        "| mode | seconds per photo | slices/s |",
        "|---|---|---|",
        f"| batched | {batched.fmt(3)} | {n_slices / batched.median:.1f} |",
        f"| one slice per call | {single.fmt(3)} | {n_slices / single.median:.1f} |",
        "",
        f"Speed-up {single.median / batched.median:.2f}×; detections identical: "
        f"{'yes' if same else 'NO'} ({detections} detections).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args()
    print(run(args.reps, args.width, args.height))


if __name__ == "__main__":
    main()
