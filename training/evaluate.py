"""Held-out metrics of the exported ONNX files (numpy + onnxruntime only, no PyTorch).

The files are read exactly as the pipeline reads them: inputs letterboxed by
:func:`pipeline.inference.yolo.letterbox_into`, outputs decoded (confidence filter, class-aware
NMS, box/mask mapping to source pixels) by :func:`~pipeline.inference.yolo.decode_detect` and
:func:`~pipeline.inference.yolo.decode_segment`, detection slices laid out by
:func:`pipeline.vision.tiling.slice_boxes`, overlaps measured with
:func:`pipeline.vision.merge.match_metric`.

* detection: per 512-px slice (no overlap, last slice shifted back to the border), before the
  pipeline's cross-slice merge; precision, recall of all plants at least 30 % inside the slice
  and of the clearly visible ones (visibility ≥ 0.6, ≥ 80 % inside).
* segmentation: per container, the best unused instance by mask IoU at source resolution.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.inference.yolo import (
    LetterboxInfo,
    decode_detect,
    decode_segment,
    letterbox,
    letterbox_into,
)
from pipeline.synth import generate_scene
from pipeline.synth.scene import Variant
from pipeline.vision.merge import match_metric
from pipeline.vision.tiling import slice_boxes
from training.data import polygon_mask
from training.layout import (
    DET_IMGSZ,
    DET_NAMES,
    DET_STRIDE,
    NUM_MASK_COEFFS,
    SEG_HEAD_STRIDE,
    SEG_IMGSZ,
    SEG_NAMES,
    SEG_NET,
)

DET_BATCH = 8
DET_ANCHORS = (DET_IMGSZ // DET_STRIDE) ** 2
_IDENTITY = LetterboxInfo(scale=1.0, pad_x=0.0, pad_y=0.0, new_w=DET_IMGSZ, new_h=DET_IMGSZ)


def ort_session(path: Path) -> Any:
    """A CPU onnxruntime session with ``BUILD_THREADS`` (default 2) intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("BUILD_THREADS", "2"))
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verify_shapes(det: Path | None, seg: Path | None) -> dict[str, Any]:
    """Run each file at two batch sizes and check its output names and shapes."""
    out: dict[str, Any] = {}
    if det is not None:
        s = ort_session(det)
        for b in (1, 3):
            y = s.run(None, {"images": np.zeros((b, 3, DET_IMGSZ, DET_IMGSZ), np.float32)})
            assert [o.name for o in s.get_outputs()] == ["output0"]
            n = (DET_IMGSZ // DET_STRIDE) ** 2
            assert y[0].shape == (b, 4 + len(DET_NAMES), n), y[0].shape
        out["det"] = {"output0": list(y[0].shape[1:])}
    if seg is not None:
        s = ort_session(seg)
        for b in (1, 2):
            y = s.run(None, {"images": np.zeros((b, 3, SEG_IMGSZ, SEG_IMGSZ), np.float32)})
            assert [o.name for o in s.get_outputs()] == ["output0", "output1"]
            n = (SEG_NET // SEG_HEAD_STRIDE) ** 2
            assert y[0].shape == (b, 4 + len(SEG_NAMES) + NUM_MASK_COEFFS, n), y[0].shape
            q = SEG_IMGSZ // 4
            assert y[1].shape == (b, NUM_MASK_COEFFS, q, q), y[1].shape
        out["seg"] = {"output0": list(y[0].shape[1:]), "output1": list(y[1].shape[1:])}
    return out


def match(
    pred: NDArray[Any], scores: NDArray[Any], gt: NDArray[Any], thr: float = 0.5
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Greedy by score at IoU ≥ ``thr``, each truth matched once.

    The rule of :func:`pipeline.evaluation.metrics.match_detections`, which returns only the hits in
    score order; here the recall of a subset of the truths (the clearly visible plants) needs
    *which* truths were matched. Returns ``(prediction matched, truth matched)``.
    """
    pm = np.zeros(len(pred), bool)
    gm = np.zeros(len(gt), bool)
    if len(pred) == 0 or len(gt) == 0:
        return pm, gm
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        iou = match_metric(pred[i], gt, "iou")
        iou[gm] = -1.0
        j = int(np.argmax(iou))
        if iou[j] >= thr:
            pm[i] = True
            gm[j] = True
    return pm, gm


def eval_det(
    path: Path,
    seeds: Sequence[int],
    size: tuple[int, int],
    conf: float = 0.25,
    iou: float = 0.5,
    max_det: int = DET_ANCHORS,
    variant: Variant = "classic",
) -> dict[str, Any]:
    """Per-slice detection metrics on held-out scenes (of the generator ``variant``).

    ``max_det`` defaults to every anchor (no cap), the metric this build has always recorded:
    :func:`~pipeline.inference.yolo.decode_detect`'s own default of 300 cuts dense seedbed
    slices (3 held-out 2000×1500 scenes: 4,370 of 9,712 boxes kept, recall 0.93 → 0.56).
    """
    sess = ort_session(path)
    tp = fp = 0
    clear_tot = clear_hit = all_tot = all_hit = 0
    slices = 0
    for seed in seeds:
        sc = generate_scene(seed, *size, variant=variant)
        img = np.asarray(sc.image)
        h, w = img.shape[:2]
        boxes = np.array([p.box for p in sc.plants], dtype=np.float32).reshape(-1, 4)
        vis = np.array([p.visibility for p in sc.plants], dtype=np.float32)
        cells = slice_boxes(w, h, DET_IMGSZ, overlap=0.0)
        for start in range(0, len(cells), DET_BATCH):
            chunk = cells[start : start + DET_BATCH]
            batch = np.empty((len(chunk), 3, DET_IMGSZ, DET_IMGSZ), np.float32)
            for i, (x0, y0, x1, y1) in enumerate(chunk):
                letterbox_into(batch[i], img[y0:y1, x0:x1])
            out = sess.run(None, {"images": batch})[0]
            for (x0, y0, _, _), o in zip(chunk, out, strict=True):
                slices += 1
                pb, ps, _ = decode_detect(
                    o, conf, iou, _IDENTITY, DET_IMGSZ, DET_IMGSZ, nc=1, max_det=max_det
                )
                b = boxes - np.array([x0, y0, x0, y0], np.float32)
                cb = np.clip(b, 0, DET_IMGSZ)
                area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
                carea = np.clip(cb[:, 2] - cb[:, 0], 0, None) * np.clip(
                    cb[:, 3] - cb[:, 1], 0, None
                )
                frac = carea / np.maximum(area, 1e-6)
                present = frac >= 0.3
                gt = cb[present]
                clear = ((vis >= 0.6) & (frac >= 0.8))[present]
                pm, gm = match(pb, ps, gt)
                tp += int(pm.sum())
                fp += int((~pm).sum())
                clear_tot += int(clear.sum())
                clear_hit += int((gm & clear).sum())
                all_tot += len(gt)
                all_hit += int(gm.sum())
    return {
        "scenes": len(seeds),
        "scene_size": list(size),
        "slices": slices,
        "conf": conf,
        "nms_iou": iou,
        "match_iou": 0.5,
        "max_det": max_det,
        "precision": round(tp / max(1, tp + fp), 4),
        "recall_clear": round(clear_hit / max(1, clear_tot), 4),
        "recall_all": round(all_hit / max(1, all_tot), 4),
        "clear_plants": clear_tot,
        "all_plants": all_tot,
        "predictions": tp + fp,
    }


def eval_seg(
    path: Path, jobs: Sequence[tuple[int, int, int]], conf: float = 0.30, iou: float = 0.5
) -> dict[str, Any]:
    """Per-container segmentation metrics on held-out scenes, masks at source resolution."""
    sess = ort_session(path)
    n_gt = n_mask80 = n_box80 = n_cls_ok = n_found = fp = 0
    mask_ious: list[float] = []
    per_class: dict[str, list[int]] = {c: [0, 0] for c in SEG_NAMES}
    for seed, w, h in jobs:
        sc = generate_scene(seed, w, h)
        x, info = letterbox(np.asarray(sc.image), SEG_IMGSZ)
        o0, o1 = sess.run(None, {"images": x[None]})
        found = decode_segment(
            o0[0], o1[0], conf, iou, info, w, h, input_size=SEG_IMGSZ, nc=len(SEG_NAMES)
        )
        used = np.zeros(len(found), bool)
        for c in sc.containers:
            gt = polygon_mask(c.polygon, w, h)
            gt_area = int(gt.sum())
            n_gt += 1
            per_class[c.class_name][1] += 1
            best_i, best_iou = -1, 0.0
            for pi, inst in enumerate(found):
                if used[pi]:
                    continue
                x0, y0, x1, y1 = inst.crop_box
                inter = int((inst.mask & gt[y0:y1, x0:x1]).sum())
                v = inter / max(inst.area_px + gt_area - inter, 1)
                if v > best_iou:
                    best_i, best_iou = pi, v
            mask_ious.append(best_iou)
            if best_i < 0 or best_iou < 0.5:
                continue
            used[best_i] = True
            n_found += 1
            n_mask80 += best_iou >= 0.8
            box_iou = float(match_metric(np.array(found[best_i].box), np.array([c.bbox]))[0])
            n_box80 += box_iou >= 0.8
            ok = found[best_i].class_id == c.class_id
            n_cls_ok += ok
            per_class[c.class_name][0] += ok
        fp += int((~used).sum())
    return {
        "scenes": len(jobs),
        "conf": conf,
        "nms_iou": iou,
        "mask_resolution": "source",
        "containers": n_gt,
        "found_iou50": n_found,
        "mask_iou_ge_0.8": round(n_mask80 / max(1, n_gt), 4),
        "box_iou_ge_0.8": round(n_box80 / max(1, n_gt), 4),
        "mean_mask_iou": round(float(np.mean(mask_ious)) if mask_ious else 0.0, 4),
        "class_accuracy_of_found": round(n_cls_ok / max(1, n_found), 4),
        "class_correct_by_class": {k: f"{v[0]}/{v[1]}" for k, v in per_class.items()},
        "false_positives": fp,
    }
