"""Section 5: batched sliced detection vs one slice per device call, same model, same photo;
then plantpipe's sliced detection against SAHI's on the whole photo.

    python -m bench.sliced [--reps 5] [--width 4000 --height 3000]

runs the first part alone (:func:`run`) and prints a markdown table; ``python -m bench``
runs both (:func:`run_section`). Uses the bundled default models when present
(pipeline/models), else the YOLO-layout fixture models of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from bench.common import Stat
from bench.harness import Harness, SectionOutput
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
        seg_model_path=seg,
        seg_input_size=320,
        det_model_path=det,
        providers=["CPUExecutionProvider"],
        warmup=False,
    )
    trays = (
        (100, 100, width // 2 - 50, height - 100),
        (width // 2 + 50, 100, width - 100, height - 100),
    )
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


# --------------------------------------------------------------------------- against SAHI

SAHI_VENV: Final = Path(tempfile.gettempdir()) / "plantpipe-bench-sahi-venv"

#: Run inside the throwaway SAHI venv: SAHI's ``get_sliced_prediction`` over the same ONNX
#: detect model through a small ``DetectionModel`` adapter (SAHI 0.12 loads ONNX only through
#: Ultralytics/torch). Same preprocessing (RGB/255, pad 114), per-slice class-aware NMS,
#: GREEDYNMM/IOS 0.5 class-aware merge; one slice per model call (SAHI's default).
SAHI_SCRIPT: Final = '''\
"""Written and run by bench/sliced.py in a throwaway venv (sahi + onnxruntime): SAHI's
get_sliced_prediction over the same ONNX detect model through a small DetectionModel adapter.
Prints one JSON line."""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
import sahi
from PIL import Image
from sahi.models.base import DetectionModel
from sahi.predict import get_sliced_prediction
from sahi.prediction import ObjectPrediction

model_path, image_path, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIZE, CONF, IOU = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])


def area(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def nms(boxes, scores, iou):
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        union = area(boxes[i : i + 1]) + area(boxes[rest]) - inter
        order = rest[inter / np.maximum(union, 1e-9) <= iou]
    return np.array(keep, dtype=np.int64)


class OnnxYoloDetect(DetectionModel):
    """YOLO (Ultralytics layout) detect model in ONNX Runtime, one slice per call."""

    def load_model(self):
        session = ort.InferenceSession(self.model_path, providers=["CPUExecutionProvider"])
        self.set_model(session)

    def set_model(self, model, **kwargs):
        self.model = model
        nc = model.get_outputs()[0].shape[1]
        nc = nc - 4 if isinstance(nc, int) else 2
        self.category_mapping = {str(i): str(i) for i in range(nc)}

    def perform_inference(self, image):
        h, w = image.shape[:2]
        x = np.full((1, 3, SIZE, SIZE), 114 / 255, np.float32)
        x[0, :, :h, :w] = image[:SIZE, :SIZE].transpose(2, 0, 1) / np.float32(255)
        out = self.model.run(None, {self.model.get_inputs()[0].name: x})[0][0]
        scores, cls = out[4:].max(0), out[4:].argmax(0)
        keep = scores >= self.confidence_threshold
        cx, cy, bw, bh = out[:4, keep]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        scores, cls = scores[keep], cls[keep]
        kept = []
        for c in np.unique(cls):
            idx = np.nonzero(cls == c)[0]
            kept += list(idx[nms(boxes[idx], scores[idx], IOU)])
        self._original_predictions = (boxes[kept], scores[kept], cls[kept], (h, w))

    def _create_object_prediction_list_from_original_predictions(
        self, shift_amount_list=None, full_shape_list=None
    ):
        boxes, scores, cls, (h, w) = self._original_predictions
        shift = shift_amount_list[0] if shift_amount_list else [0, 0]
        full = full_shape_list[0] if full_shape_list else None
        preds = []
        for b, s, c in zip(boxes, scores, cls):
            x1, y1 = max(0.0, float(b[0])), max(0.0, float(b[1]))
            x2, y2 = min(float(w), float(b[2])), min(float(h), float(b[3]))
            if x2 <= x1 or y2 <= y1:
                continue
            name = self.category_mapping[str(int(c))]
            preds.append(
                ObjectPrediction(
                    bbox=[x1, y1, x2, y2], category_id=int(c), category_name=name,
                    score=float(s), shift_amount=shift, full_shape=full,
                )
            )
        self._object_prediction_list_per_image = [preds]


rgb = np.asarray(Image.open(image_path).convert("RGB"))
model = OnnxYoloDetect(model_path=model_path, confidence_threshold=CONF, device="cpu")
times, result = [], None
for rep in range(reps + 1):  # rep 0 warms up
    t0 = time.perf_counter()
    result = get_sliced_prediction(
        rgb, model, slice_height=SIZE, slice_width=SIZE, overlap_height_ratio=0.25,
        overlap_width_ratio=0.25, perform_standard_pred=False, postprocess_type="GREEDYNMM",
        postprocess_match_metric="IOS", postprocess_match_threshold=0.5,
        postprocess_class_agnostic=False, verbose=0,
    )
    if rep:
        times.append(time.perf_counter() - t0)
boxes = [p.bbox.to_xyxy() for p in result.object_prediction_list]
out = {"times_s": times, "boxes": boxes, "sahi": sahi.__version__, "ort": ort.__version__}
print(json.dumps(out))
'''


async def sahi_python(h: Harness) -> tuple[Path | None, str]:
    """A python with ``sahi`` and ``onnxruntime`` (a throwaway venv in the temp folder,
    created on first use), or None and the reason."""
    python = SAHI_VENV / "bin" / "python"
    if not python.exists():
        rc, _out, err = await h.command(["python3", "-m", "venv", str(SAHI_VENV)], os.environ, 120)
        if rc == 0:
            argv = [str(python), "-m", "pip", "install", "-q", "sahi", "onnxruntime"]
            rc, _out, err = await h.command(argv, os.environ, 600)
        if rc != 0:
            return None, f"installing sahi failed: {err.strip()[-300:]}"
    rc, _out, err = await h.command([str(python), "-c", "import sahi, onnxruntime"], os.environ, 60)
    if rc != 0:
        return None, f"sahi does not import: {err.strip()[-300:]}"
    return python, ""


def _iou_matches(a: NDArray[np.float64], b: NDArray[np.float64], threshold: float = 0.5) -> int:
    """Greedy one-to-one matches of boxes ``a`` and ``b`` (xyxy) at IoU ≥ threshold."""
    if len(a) == 0 or len(b) == 0:
        return 0
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    matched = 0
    used = np.zeros(len(b), bool)
    for i in np.argsort(-iou.max(1)):
        j = int(np.argmax(np.where(used, -1.0, iou[i])))
        if iou[i, j] >= threshold and not used[j]:
            used[j] = True
            matched += 1
    return matched


def _ours_full_image(
    width: int, height: int, reps: int, image_path: Path
) -> tuple[list[float], NDArray[np.float64], Path, int, float, float, str]:
    """plantpipe's batched sliced detection over the whole photo (one region, no segments),
    to compare with SAHI on the same input."""
    from pipeline.inference.slicing import Region

    analyzer, rgb, source = analyzer_and_photo(width, height, 11)
    h, w = rgb.shape[:2]
    Image.fromarray(rgb).save(image_path)
    region = Region(segment_index=0, x0=0, y0=0, mask=np.ones((h, w), dtype=bool))
    found, n_slices = analyzer.detect_sliced(rgb, [region], batched=True)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        found, n_slices = analyzer.detect_sliced(rgb, [region], batched=True)
        times.append(time.perf_counter() - t0)
    cfg = analyzer.config
    model = cfg.det_model_path or BUNDLED_DET_MODEL
    boxes = np.asarray(found[0].boxes, dtype=np.float64)
    return times, boxes, Path(model), n_slices, cfg.det_conf, cfg.det_iou, source


async def compare_sahi(h: Harness, width: int, height: int, reps: int) -> tuple[str, str]:
    """The comparison's markdown and its headline ("" when not compared)."""
    python, problem = await sahi_python(h)
    if python is None:
        return f"SAHI was not compared: {problem}.", ""
    image_path = h.log_dir / "sahi-photo.png"
    times, ours, model, n_slices, conf, iou, _source = await asyncio.to_thread(
        _ours_full_image, width, height, reps, image_path
    )
    script = h.log_dir / "sahi_compare.py"
    await asyncio.to_thread(script.write_text, SAHI_SCRIPT)
    argv = [str(python), str(script), str(model), str(image_path), str(reps), "512", str(conf),
            str(iou)]  # fmt: skip
    rc, out, err = await h.command(argv, os.environ, 600)
    if rc != 0:
        return f"SAHI was not compared: its run failed: {err.strip()[-400:]}", ""
    data = json.loads(out.strip().splitlines()[-1])
    sahi_boxes = np.asarray(data["boxes"], dtype=np.float64).reshape(-1, 4)
    ours_t, sahi_t = Stat.of(times), Stat.of([float(t) for t in data["times_s"]])
    matched = _iou_matches(ours, sahi_boxes)
    headline = (
        f"sliced detection vs SAHI {data['sahi']} on the whole photo: "
        f"{ours_t.median:.2f} s vs {sahi_t.median:.2f} s per photo, {matched} of "
        f"{len(ours)}/{len(sahi_boxes)} detections matched"
    )
    return "\n".join(
        [
            f"Against SAHI {data['sahi']} (onnxruntime {data['ort']}, throwaway venv): the same "
            f"photo and detect model, sliced over the **whole** {width}×{height} photo (no "
            "segmentation; SAHI has none), slices 512 px, overlap 0.25, GREEDYNMM / IOS 0.5 "
            "class-aware, `perform_standard_pred=False`. SAHI 0.12 loads ONNX models only "
            "through Ultralytics (torch), so the model runs under a 50-line SAHI "
            "`DetectionModel` adapter (ONNX Runtime, same preprocessing and per-slice NMS), one "
            "slice per call as SAHI does by default.",
            "",
            "| implementation | seconds per photo (detection only) | detections |",
            "|---|---|---|",
            f"| plantpipe `detect_sliced`, batched ({n_slices} slices) | {ours_t.fmt(3)} | "
            f"{len(ours)} |",
            f"| SAHI `get_sliced_prediction` + adapter | {sahi_t.fmt(3)} | {len(sahi_boxes)} |",
            "",
            f"{matched} detections match one-to-one at IoU ≥ 0.5 "
            f"({matched / max(1, len(ours)):.1%} of plantpipe's, "
            f"{matched / max(1, len(sahi_boxes)):.1%} of SAHI's); plantpipe is "
            f"{sahi_t.median / ours_t.median:.2f}× SAHI's speed on this input.",
        ]
    ), headline


async def run_section(h: Harness) -> SectionOutput:
    """Section 5 of ``python -m bench``: :func:`run` on a 12 MP photo, then against SAHI."""
    reps = 5
    width, height = (2000, 1500) if h.quick else (4000, 3000)
    body = await asyncio.to_thread(run, reps, width, height)
    headlines: list[str] = []
    speedup = next((ln for ln in body.splitlines() if ln.startswith("Speed-up")), "")
    if speedup:
        headlines.append(
            f"sliced detection {width}×{height}, batched vs one slice per call: "
            f"{speedup.split(';')[0].removeprefix('Speed-up ')}"
        )
    try:
        versus, line = await compare_sahi(h, width, height, reps)
        if line:
            headlines.append(line)
    except Exception as exc:  # the comparison is optional; say why it is missing
        versus = f"SAHI was not compared: the comparison failed ({exc!r})."
    return (
        f"`bench.sliced.run(reps={reps}, width={width}, height={height})`, output as is:\n\n"
        f"{body}\n\n{versus}",
        headlines,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args()
    print(run(args.reps, args.width, args.height))


if __name__ == "__main__":
    main()
