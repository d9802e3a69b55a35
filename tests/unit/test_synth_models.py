"""The default ONNX models in pipeline/models: layout, sidecars, and a quality smoke test.

Runs with onnxruntime only (no torch). Skips, saying why, when a model file is absent.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.synth import CONTAINER_CLASSES, generate_scene

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

MODELS = Path(__file__).resolve().parents[2] / "pipeline" / "models"
DET = MODELS / "det.onnx"
SEG = MODELS / "seg.onnx"


def _session(path: Path) -> Any:
    if not path.exists():
        pytest.skip(f"{path.name} is absent: build it with `python -m training.build`")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_suffix(".json")
    assert side.exists(), f"{side.name} must sit next to {path.name}"
    doc: dict[str, Any] = json.loads(side.read_text())
    return doc


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    out: np.ndarray = inter / (aa[:, None] + ab[None, :] - inter + 1e-9)
    return out


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order:
        i = int(order.pop(0))
        keep.append(i)
        if order:
            ious = _iou(boxes[i : i + 1], boxes[order])[0]
            order = [j for j, v in zip(order, ious, strict=True) if v <= iou]
    return keep


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)


def test_det_layout_and_sidecar() -> None:
    sess = _session(DET)
    (inp,) = sess.get_inputs()
    assert inp.name == "images"
    assert inp.type == "tensor(float)"
    assert isinstance(inp.shape[0], str)  # dynamic batch axis
    assert inp.shape[1:] == [3, 512, 512]
    assert [o.name for o in sess.get_outputs()] == ["output0"]
    for batch in (1, 3):
        (out,) = sess.run(None, {"images": np.full((batch, 3, 512, 512), 114 / 255, np.float32)})
        assert out.dtype == np.float32
        assert out.shape == (batch, 5, 4096)
        assert np.all((out[:, 4] >= 0) & (out[:, 4] <= 1))
    meta = sess.get_modelmeta().custom_metadata_map
    assert ast.literal_eval(meta["names"]) == {0: "plant"}
    assert meta["task"] == "detect"
    assert ast.literal_eval(meta["imgsz"]) == [512, 512]
    assert int(meta["stride"]) == 8
    side = _sidecar(DET)
    assert side["names"] == ["plant"]
    assert side["imgsz"] == 512
    assert side["task"] == "detect"
    assert side["build"]["sha256"] == hashlib.sha256(DET.read_bytes()).hexdigest()
    assert DET.stat().st_size < 4 * 1024 * 1024


def test_seg_layout_and_sidecar() -> None:
    sess = _session(SEG)
    (inp,) = sess.get_inputs()
    assert inp.name == "images"
    assert isinstance(inp.shape[0], str)
    assert inp.shape[1:] == [3, 1024, 1024]
    assert [o.name for o in sess.get_outputs()] == ["output0", "output1"]
    out0, out1 = sess.run(None, {"images": np.full((2, 3, 1024, 1024), 114 / 255, np.float32)})
    assert out0.shape[:2] == (2, 4 + 5 + 32)
    assert out1.shape == (2, 32, 256, 256)
    assert np.all((out0[:, 4:9] >= 0) & (out0[:, 4:9] <= 1))
    meta = sess.get_modelmeta().custom_metadata_map
    assert ast.literal_eval(meta["names"]) == dict(enumerate(CONTAINER_CLASSES))
    assert meta["task"] == "segment"
    side = _sidecar(SEG)
    assert side["names"] == list(CONTAINER_CLASSES)
    assert side["imgsz"] == 1024
    assert side["task"] == "segment"
    assert side["build"]["sha256"] == hashlib.sha256(SEG.read_bytes()).hexdigest()
    assert SEG.stat().st_size < 4 * 1024 * 1024


def test_det_finds_plants_on_a_heldout_slice() -> None:
    sess = _session(DET)
    scene = generate_scene(987_654_321, 2000, 1500, n_containers=1, classes=["cajon"])
    x1, y1, x2, y2 = scene.containers[0].bbox
    x0 = int(max(0, min((x1 + x2) / 2 - 256, scene.width - 512)))
    y0 = int(max(0, min((y1 + y2) / 2 - 256, scene.height - 512)))
    crop = scene.image[y0 : y0 + 512, x0 : x0 + 512]
    (out,) = sess.run(None, {"images": crop.transpose(2, 0, 1)[None].astype(np.float32) / 255})
    pred = out[0]
    k = np.flatnonzero(pred[4] > 0.25)
    boxes = _xyxy(pred[:4, k].T)
    boxes = boxes[_nms(boxes, pred[4, k], 0.5)]
    gt = np.array(
        [
            [p.box[0] - x0, p.box[1] - y0, p.box[2] - x0, p.box[3] - y0]
            for p in scene.plants
            if p.visibility >= 0.8
            and p.box[0] >= x0
            and p.box[1] >= y0
            and p.box[2] <= x0 + 512
            and p.box[3] <= y0 + 512
        ]
    )
    assert len(gt) >= 3
    iou = _iou(gt, boxes) if len(boxes) else np.zeros((len(gt), 1))
    recall = float((iou.max(1) >= 0.5).mean())
    assert recall >= 0.7, f"recall {recall:.2f} on {len(gt)} clear plants"
    # Precision: predictions should sit on some plant (any visibility, clipped to the slice).
    every = np.array([p.box for p in scene.plants], dtype=np.float32) - [x0, y0, x0, y0]
    clipped = np.clip(every, 0, 512)
    area = (every[:, 2] - every[:, 0]) * (every[:, 3] - every[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) / area
    present = clipped[inside >= 0.3]
    assert len(boxes) > 0
    precision = float((_iou(boxes, present).max(1) >= 0.5).mean())
    assert precision >= 0.7, f"precision {precision:.2f} over {len(boxes)} predictions"


def test_seg_finds_the_containers() -> None:
    sess = _session(SEG)
    scene = generate_scene(987_654_322, 1600, 1200, n_containers=2, classes=["plug", "cajon"])

    scale = 1024 / 1600
    nh = round(1200 * scale)
    pad_y = round((1024 - nh) / 2 - 0.1)
    img = np.full((1024, 1024, 3), 114, np.uint8)
    img[pad_y : pad_y + nh] = np.asarray(
        Image.fromarray(scene.image).resize((1024, nh), Image.Resampling.BILINEAR)
    )
    out0, out1 = sess.run(None, {"images": img.transpose(2, 0, 1)[None].astype(np.float32) / 255})
    pred = out0[0]
    scores = pred[4:9].max(0)
    k = np.flatnonzero(scores > 0.3)
    boxes = _xyxy(pred[:4, k].T)
    keep = _nms(boxes, scores[k], 0.5)
    boxes, classes = boxes[keep], pred[4:9, k].argmax(0)[keep]
    gt = np.array(
        [
            [b[0] * scale, b[1] * scale + pad_y, b[2] * scale, b[3] * scale + pad_y]
            for b in (c.bbox for c in scene.containers)
        ]
    )
    assert len(boxes) >= 1
    iou = _iou(gt, boxes)
    for gi, c in enumerate(scene.containers):
        j = int(iou[gi].argmax())
        assert iou[gi, j] >= 0.6, f"{c.class_name}: best box IoU {iou[gi, j]:.2f}"
        assert CONTAINER_CLASSES[int(classes[j])] == c.class_name
    assert out1.shape == (1, 32, 256, 256)
