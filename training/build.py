"""Build the default models from the project's own synthetic scenes (build-time only).

    python -m training.build --seed 0 --out pipeline/models

Generates scenes with :mod:`pipeline.synth`, trains the two compact anchor-free CNNs of
:mod:`training.network` (no third-party training code), exports them to ONNX in the
Ultralytics YOLO layouts (:mod:`training.export`), checks them with onnxruntime, measures them
on held-out seeds with the runtime's decoders (:mod:`training.evaluate`) and writes the JSON
sidecars and ``build_report.json``. Needs the ``[train]`` extra (PyTorch); the runtime uses
onnxruntime only. Training is deterministic for a given seed, thread count and PyTorch build.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

try:
    import torch
except ImportError as exc:  # the runtime's venv: no PyTorch
    raise SystemExit(
        "python -m training.build needs PyTorch: pip install -e '.[dev,train]' "
        "(see pipeline/models/README_MODELS.md)"
    ) from exc

from pipeline.synth.scene import VARIANTS, Variant
from training.data import generate, scene_jobs, split_scenes, variant_jobs
from training.evaluate import eval_det, eval_seg, verify_shapes
from training.export import (
    export_onnx,
    make_det_export,
    make_seg_export,
    model_metadata,
    parity,
    sha256,
    write_sidecar,
)
from training.layout import (
    DET_IMGSZ,
    DET_NAMES,
    DET_STRIDE,
    HELDOUT_BASE,
    SEG_EXTRA_OFFSET,
    SEG_IMGSZ,
    SEG_NAMES,
    SEG_NET,
    SEG_SHAPES,
    SEG_STRIDE,
    VARIANT_OFFSET,
    VARIANT_STRIDE,
)
from training.network import DetNet, SegNet
from training.train import FINE_TUNE_LR, SCRATCH_LR, log, train_det, train_seg
from training.warmstart import load_det, load_seg

PROG = "python -m training.build"


def variant_list(text: str) -> list[Variant]:
    """``"wide,angled"`` → the generator variants (ValueError for an unknown one)."""
    chosen: list[Variant] = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        variant = next((v for v in VARIANTS if v == name and v != "classic"), None)
        if variant is None:
            raise ValueError(f"unknown variant {name!r}: one of {', '.join(VARIANTS[1:])}")
        chosen.append(variant)
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="pipeline/models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="scene generation processes")
    ap.add_argument("--det-scenes", type=int, default=140)
    ap.add_argument("--seg-shared-scenes", type=int, default=60, help="det scenes reused by seg")
    ap.add_argument("--seg-scenes", type=int, default=90, help="extra scenes for seg only")
    ap.add_argument(
        "--variants",
        default=",".join(v for v in VARIANTS if v != "classic"),
        help="other scene generators trained on besides classic (comma-separated; '' for none)",
    )
    ap.add_argument(
        "--det-variant-scenes", type=int, default=70, help="2000x1500 scenes per other variant"
    )
    ap.add_argument(
        "--seg-variant-scenes", type=int, default=20, help="extra seg-only scenes per variant"
    )
    ap.add_argument("--det-iters", type=int, default=7000)
    ap.add_argument("--seg-iters", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--det-loss",
        choices=["qfl", "focal"],
        default="focal",
        help="det score loss: focal loss with binary targets (shipped det.onnx), or IoU-aware "
        "quality focal loss (experimental: meant to cut duplicate boxes in dense seedbeds)",
    )
    ap.add_argument("--seg-batch", type=int, default=12)
    ap.add_argument("--eval-det-scenes", type=int, default=10)
    ap.add_argument("--eval-seg-scenes", type=int, default=40)
    ap.add_argument("--only", choices=["det", "seg", "both"], default="both")
    ap.add_argument(
        "--det-init",
        type=Path,
        help="fine-tune: start det from this ONNX file's weights (a det.onnx this build made), "
        "batch norms frozen, instead of random weights",
    )
    ap.add_argument("--seg-init", type=Path, help="fine-tune: start seg from this seg.onnx")
    ap.add_argument(
        "--det-lr",
        type=float,
        help=f"det peak learning rate ({SCRATCH_LR}; {FINE_TUNE_LR} with --det-init)",
    )
    ap.add_argument(
        "--seg-lr",
        type=float,
        help=f"seg peak learning rate ({SCRATCH_LR}; {FINE_TUNE_LR} with --seg-init)",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        help="keep generated scenes here (per generator fingerprint) and reuse them",
    )
    ap.add_argument("--eval-only", action="store_true", help="evaluate existing ONNX files")
    return ap.parse_args(argv)


def recorded_command(argv: Sequence[str] | None) -> str:
    """The command as recorded in the sidecars: relative, no interpreter or checkout path."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([PROG, *map(shlex.quote, args)])


Net = TypeVar("Net", DetNet, SegNet)


def initial_weights(
    path: Path | None, lr: float | None, load: Callable[[Path], Net]
) -> tuple[Net | None, dict[str, Any] | None, float]:
    """``(network to start from, its record for the report, peak learning rate)``: random
    weights at ``SCRATCH_LR`` without ``path``; ``path``'s weights at ``FINE_TUNE_LR`` with it
    (the network's batch norms frozen while fine-tuning, :mod:`training.warmstart`); ``lr``,
    when given, overrides either."""
    if path is None:
        return None, None, SCRATCH_LR if lr is None else lr
    if not path.is_file():
        raise SystemExit(f"{PROG}: {path}: no such ONNX file to start from")
    # read now: the build may write its output over this very file
    record = {"file": path.name, "sha256": sha256(path)}
    net = load(path)
    log(f"starting from {path} (sha256 {record['sha256'][:12]}…)")
    return net, record, FINE_TUNE_LR if lr is None else lr


def train_and_export(
    args: argparse.Namespace, out: Path, do_det: bool, do_seg: bool
) -> tuple[dict[str, Any], dict[str, float]]:
    """Generate, train and export the requested models; the report entries and timings."""
    report: dict[str, Any] = {}
    timings: dict[str, float] = {}
    base = args.seed * 1_000_000
    n_det = args.det_scenes
    jobs = scene_jobs(base, n_det, args.seg_shared_scenes, args.seg_scenes, do_det, do_seg)
    variants = variant_list(args.variants)
    jobs += variant_jobs(
        base, variants, args.det_variant_scenes, args.seg_variant_scenes, do_det, do_seg
    )
    t = time.time()
    log(f"generating {len(jobs)} scenes (seeds {jobs[0][0]}..{jobs[-1][0]})")
    det_scenes, seg_scenes = split_scenes(
        jobs, generate(jobs, args.workers, args.cache), base, args.seg_shared_scenes
    )
    timings["generate_s"] = round(time.time() - t, 1)
    log(f"generated in {timings['generate_s']}s")
    common = {
        "author": "plantpipe",
        "license": "Apache-2.0",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "version": "plantpipe-synth-1",
    }
    if do_det:
        det_init, det_from, det_lr = initial_weights(args.det_init, args.det_lr, load_det)
        t = time.time()
        det = train_det(
            det_scenes,
            args.det_iters,
            args.batch,
            args.seed,
            quality=args.det_loss == "qfl",
            init=det_init,
            lr=det_lr,
        )
        timings["det_train_s"] = round(time.time() - t, 1)
        exp = make_det_export(det)
        desc = "plantpipe plant detector (synthetic-trained, anchor-free)"
        meta = model_metadata(common, desc, "detect", DET_NAMES, DET_IMGSZ, DET_STRIDE)
        export_onnx(exp, DET_IMGSZ, out / "det.onnx", ["output0"], meta)
        report["det_parity_max_abs"] = parity(exp, out / "det.onnx", DET_IMGSZ, args.seed)
        report["det_params"] = sum(p.numel() for p in det.parameters())
        report["det_train"] = {
            "scenes": len(det_scenes),
            "scene_seeds": [base, base + n_det - 1],
            "variants": {v: args.det_variant_scenes for v in variants},
            "variant_seeds": f"{base + VARIANT_OFFSET} + k * {VARIANT_STRIDE} + i, k = index "
            "in variants",
            "iters": args.det_iters,
            "batch": args.batch,
            "crop": 256,
            "score_loss": args.det_loss,
            "lr": det_lr,
            "init": det_from,
            "wall_s": timings["det_train_s"],
        }
    if do_seg:
        seg_init, seg_from, seg_lr = initial_weights(args.seg_init, args.seg_lr, load_seg)
        t = time.time()
        seg = train_seg(
            seg_scenes, args.seg_iters, args.seg_batch, args.seed, init=seg_init, lr=seg_lr
        )
        timings["seg_train_s"] = round(time.time() - t, 1)
        sexp = make_seg_export(seg)
        desc = "plantpipe container segmenter (synthetic-trained)"
        meta = model_metadata(common, desc, "segment", SEG_NAMES, SEG_IMGSZ, SEG_STRIDE)
        export_onnx(sexp, SEG_IMGSZ, out / "seg.onnx", ["output0", "output1"], meta)
        report["seg_parity_max_abs"] = parity(sexp, out / "seg.onnx", SEG_IMGSZ, args.seed)
        report["seg_params"] = sum(p.numel() for p in seg.parameters())
        extra = base + SEG_EXTRA_OFFSET
        report["seg_train"] = {
            "scenes": len(seg_scenes),
            "scene_seeds": (
                f"{base}..{base + args.seg_shared_scenes - 1} (2000x1500) + "
                f"{extra}..{extra + args.seg_scenes - 1}"
                f" ({', '.join(f'{w}x{h}' for w, h in SEG_SHAPES)})"
            ),
            "variants": {v: args.det_variant_scenes + args.seg_variant_scenes for v in variants},
            "iters": args.seg_iters,
            "batch": args.seg_batch,
            "net_input": SEG_NET,
            "lr": seg_lr,
            "init": seg_from,
            "wall_s": timings["seg_train_s"],
        }
    return report, timings


def evaluate_models(
    args: argparse.Namespace, det_path: Path | None, seg_path: Path | None
) -> dict[str, Any]:
    """Held-out metrics of the given files (seeds disjoint from every training seed)."""
    report: dict[str, Any] = {}
    if det_path is not None:
        ev = [HELDOUT_BASE + i for i in range(args.eval_det_scenes)]
        report["det_eval"] = eval_det(det_path, ev, (2000, 1500))
        log(f"det held-out 2000x1500: {report['det_eval']}")
        ev4 = [HELDOUT_BASE + 500 + i for i in range(max(1, args.eval_det_scenes // 4))]
        report["det_eval_4000"] = eval_det(det_path, ev4, (4000, 3000))
        log(f"det held-out 4000x3000: {report['det_eval_4000']}")
        per_variant: dict[str, Any] = {}
        for k, variant in enumerate(variant_list(args.variants)):
            seeds = [HELDOUT_BASE + 2000 + 100 * k + i for i in range(2)]
            per_variant[variant] = eval_det(det_path, seeds, (2000, 1500), variant=variant)
            log(f"det held-out {variant} 2000x1500: {per_variant[variant]}")
        report["det_eval_variants"] = per_variant
    if seg_path is not None:
        shapes = [(2000, 1500), (1500, 2000), (4000, 3000), (2000, 2000), (2400, 1350)]
        n = args.eval_seg_scenes
        jobs = [(HELDOUT_BASE + 1000 + i, *shapes[i % len(shapes)]) for i in range(n)]
        report["seg_eval"] = eval_seg(seg_path, jobs)
        log(f"seg held-out: {report['seg_eval']}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    os.environ["BUILD_THREADS"] = str(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    command = recorded_command(argv)
    do_det = args.only in ("det", "both")
    do_seg = args.only in ("seg", "both")
    det_path, seg_path = out / "det.onnx", out / "seg.onnx"
    report_path = out / "build_report.json"
    report: dict[str, Any] = {}  # this run's entries, merged into build_report.json at the end
    timings: dict[str, float] = {}
    if not args.eval_only:
        report, timings = train_and_export(args, out, do_det, do_seg)

    report["shapes"] = verify_shapes(
        det_path if det_path.exists() else None, seg_path if seg_path.exists() else None
    )
    log(f"onnxruntime shapes ok: {report['shapes']}")
    t = time.time()
    report.update(
        evaluate_models(
            args,
            det_path if do_det and det_path.exists() else None,
            seg_path if do_seg and seg_path.exists() else None,
        )
    )
    timings["eval_s"] = round(time.time() - t, 1)
    timings["total_s"] = round(time.time() - t_all, 1)

    build_common = {
        "command": command,
        "seed": args.seed,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    for kind, path, names, imgsz, task, wanted in (
        ("det", det_path, DET_NAMES, DET_IMGSZ, "detect", do_det),
        ("seg", seg_path, SEG_NAMES, SEG_IMGSZ, "segment", do_seg),
    ):
        if not path.exists() or not wanted:
            continue
        train = report.get(f"{kind}_train")
        side = out / f"{kind}.json"
        if train is None and side.is_file():  # --eval-only: keep how the file was trained
            train = json.loads(side.read_text(encoding="utf-8")).get("build", {}).get("train")
        build = {
            **build_common,
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "train": train,
            "heldout": report.get(f"{kind}_eval"),
        }
        write_sidecar(side, names, imgsz, task, build)
        report[f"{kind}_sha256"] = build["sha256"]
        report[f"{kind}_bytes"] = build["bytes"]
    merged: dict[str, Any] = json.loads(report_path.read_text()) if report_path.exists() else {}
    runs = merged.get("runs", [])
    merged.update(report)
    merged["runs"] = [*runs, {"command": command, "only": args.only, "timings": timings}]
    report_path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    log(f"done in {timings['total_s']}s: {json.dumps(timings)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
