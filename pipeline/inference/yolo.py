"""Decoders for Ultralytics YOLOv8 / YOLO11 ONNX exports, in numpy.

Layouts handled (``B`` batch, ``nc`` classes, ``N`` anchors):

* detect: one output ``[B, 4 + nc, N]``; rows 0..3 are ``cx, cy, w, h`` in input pixels,
  then ``nc`` class scores (already through a sigmoid).
* segment: ``output0 [B, 4 + nc + 32, N]`` (box, scores, 32 mask coefficients) and
  ``output1 [B, 32, H/4, W/4]`` (prototype masks).

Coordinates: the model sees a *letterboxed* square input (aspect kept, padded with 114/255).
``LetterboxInfo`` records how to map input pixels back to source pixels; every decoder here
returns boxes, masks and polygons in **source** pixels, boxes clipped to the source image.

Masks are returned at **box-crop resolution** (see ``SegInstance``): one boolean array that
covers the integer pixel box of the instance, never a full-image mask per instance. This keeps
memory proportional to the instance, and it is what the pipeline needs (a segment's crop).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pipeline.vision.contours import mask_polygon
from pipeline.vision.merge import batched_nms

logger = logging.getLogger("pipeline.inference")

PAD_VALUE = 114.0 / 255.0
NUM_MASK_COEFFS = 32

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------
# Letterbox
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LetterboxInfo:
    """How a source image was placed into the square model input.

    ``input_x = source_x * scale + pad_x`` (same for y); ``pad_x``/``pad_y`` are whole pixels.
    ``new_w``/``new_h`` are the size of the resized image inside the padded square.
    """

    scale: float
    pad_x: float
    pad_y: float
    new_w: int = 0
    new_h: int = 0


def letterbox_info(width: int, height: int, size: int) -> LetterboxInfo:
    """The letterbox geometry for a ``width`` × ``height`` image into a ``size`` square.

    Same rounding as Ultralytics: scale = min(size/h, size/w) (up-scaling allowed), the resized
    image is centred, the odd pixel of padding goes right/bottom.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"cannot letterbox an empty image ({width}x{height})")
    scale = min(size / height, size / width)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    pad_x = round((size - new_w) / 2 - 0.1)
    pad_y = round((size - new_h) / 2 - 0.1)
    return LetterboxInfo(
        scale=scale, pad_x=float(pad_x), pad_y=float(pad_y), new_w=new_w, new_h=new_h
    )


def letterbox_into(out: FloatArray, rgb: NDArray[np.uint8]) -> LetterboxInfo:
    """Letterbox ``rgb`` (HxWx3 uint8) into ``out`` ([3, S, S] float32, 0..1, RGB) in place."""
    if out.ndim != 3 or out.shape[0] != 3 or out.shape[1] != out.shape[2]:
        raise ValueError(f"letterbox target must be [3, S, S], got {out.shape}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"letterbox source must be HxWx3, got {rgb.shape}")
    size = out.shape[1]
    h, w = rgb.shape[:2]
    info = letterbox_info(w, h, size)
    if (info.new_w, info.new_h) == (w, h):
        resized = rgb
    else:
        resized = np.asarray(
            Image.fromarray(np.ascontiguousarray(rgb)).resize(
                (info.new_w, info.new_h), Image.Resampling.BILINEAR
            )
        )
    out.fill(PAD_VALUE)
    px, py = int(info.pad_x), int(info.pad_y)
    region = out[:, py : py + info.new_h, px : px + info.new_w]
    np.divide(resized.transpose(2, 0, 1), np.float32(255.0), out=region, casting="unsafe")
    return info


def letterbox(rgb: NDArray[np.uint8], size: int) -> tuple[FloatArray, LetterboxInfo]:
    """Letterbox ``rgb`` into a new ``[3, size, size]`` float32 tensor (0..1, RGB)."""
    out = np.empty((3, size, size), dtype=np.float32)
    info = letterbox_into(out, rgb)
    return out, info


def boxes_to_source(
    boxes: NDArray[np.floating[Any]], info: LetterboxInfo, src_w: int, src_h: int
) -> FloatArray:
    """Map xyxy boxes from model-input pixels back to source pixels, clipped to the image."""
    out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    xs, ys = out[:, 0::2], out[:, 1::2]  # views
    xs -= np.float32(info.pad_x)
    ys -= np.float32(info.pad_y)
    out /= np.float32(info.scale)
    np.clip(xs, 0, src_w, out=xs)
    np.clip(ys, 0, src_h, out=ys)
    return out


def boxes_to_input(boxes: NDArray[np.floating[Any]], info: LetterboxInfo) -> FloatArray:
    """Map xyxy boxes from source pixels to model-input pixels (inverse of boxes_to_source)."""
    out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    out *= np.float32(info.scale)
    out[:, 0::2] += np.float32(info.pad_x)
    out[:, 1::2] += np.float32(info.pad_y)
    return out


def xywh_to_xyxy(xywh: NDArray[np.floating[Any]]) -> FloatArray:
    """``(cx, cy, w, h)`` rows to ``(x1, y1, x2, y2)`` rows."""
    xywh = np.asarray(xywh, dtype=np.float32).reshape(-1, 4)
    half = xywh[:, 2:4] / 2
    return np.concatenate([xywh[:, 0:2] - half, xywh[:, 0:2] + half], axis=1)


# --------------------------------------------------------------------------------------
# Detect
# --------------------------------------------------------------------------------------


def _candidates(
    pred: NDArray[np.floating[Any]], nc: int, conf: float, iou: float, max_det: int
) -> tuple[FloatArray, FloatArray, IntArray, IntArray]:
    """Confidence filter + class-aware NMS on one image's ``[4 + nc + extra, N]`` output.

    Returns (boxes xyxy in input px, scores, classes, anchor indices), best score first.
    """
    if pred.ndim != 2 or pred.shape[0] < 4 + nc:
        raise ValueError(
            f"YOLO output row must be [4+nc(+extra), N] with nc={nc}, got {pred.shape}"
        )
    scores_all = np.asarray(pred[4 : 4 + nc], dtype=np.float32)
    if nc == 1:
        classes = np.zeros(pred.shape[1], dtype=np.int64)
        scores = scores_all[0]
    else:
        classes = scores_all.argmax(axis=0).astype(np.int64)
        scores = np.take_along_axis(scores_all, classes[None, :], axis=0)[0]
    anchors = np.flatnonzero(scores > conf).astype(np.int64)
    if anchors.size == 0:
        return (
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            anchors,
        )
    boxes = xywh_to_xyxy(np.asarray(pred[0:4, anchors], dtype=np.float32).T)
    scores = scores[anchors]
    classes = classes[anchors]
    keep = np.asarray(batched_nms(boxes, scores, classes, iou), dtype=np.int64).reshape(-1)
    # Best first, ties broken by anchor order so the result is deterministic.
    keep = keep[np.lexsort((keep, -scores[keep]))][:max_det]
    return boxes[keep], scores[keep], classes[keep], anchors[keep]


def decode_detect(
    output: NDArray[np.floating[Any]],
    conf: float,
    iou: float,
    info: LetterboxInfo,
    src_w: int,
    src_h: int,
    *,
    nc: int | None = None,
    max_det: int = 300,
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Decode one image's detect output ``[4 + nc, N]``.

    Keeps anchors whose best class score is ``> conf``, applies class-aware NMS at ``iou``,
    maps boxes to source pixels (clipped). Returns ``(boxes (M, 4) xyxy, scores (M,),
    classes (M,))``, best score first.
    """
    if nc is None:
        nc = output.shape[0] - 4
    if nc < 1 or output.ndim != 2 or output.shape[0] != 4 + nc:
        raise ValueError(
            f"detect output {output.shape} is not [4 + nc, N] with nc={nc} (export without "
            "NMS/end2end, YOLOv8/YOLO11 layout)"
        )
    boxes, scores, classes, _ = _candidates(output, nc, conf, iou, max_det)
    return boxes_to_source(boxes, info, src_w, src_h), scores, classes


# --------------------------------------------------------------------------------------
# Segment
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegInstance:
    """One instance of a segmentation model, in source pixels.

    ``mask`` is at box-crop resolution: ``mask[r, c]`` is source pixel
    ``(origin_x + c, origin_y + r)``. The crop is the integer pixel box that covers ``box``
    (floor of x1/y1, ceil of x2/y2, clipped), so ``crop_box`` is where to cut the photo.
    """

    box: Box
    score: float
    class_id: int
    mask: BoolArray
    origin_x: int
    origin_y: int
    polygon: list[tuple[float, float]] = field(default_factory=list)

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        h, w = self.mask.shape
        return (self.origin_x, self.origin_y, self.origin_x + w, self.origin_y + h)

    @property
    def area_px(self) -> int:
        return int(np.count_nonzero(self.mask))


def _interp_matrix(positions: NDArray[np.float64], n: int) -> NDArray[np.float32]:
    """Dense linear-interpolation weights (len(positions), n) for samples at ``positions``
    (pixel-centre index space of an axis of length ``n``), edges clamped."""
    pos = np.clip(positions, 0.0, n - 1.0)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = (pos - i0).astype(np.float32)
    m = np.zeros((pos.size, n), dtype=np.float32)
    rows = np.arange(pos.size)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m


def crop_box_of(box: Box, src_w: int, src_h: int) -> tuple[int, int, int, int]:
    """Integer pixel box covering the float xyxy ``box``, clipped to the image, ≥ 1 px."""
    x0 = min(max(math.floor(box[0]), 0), max(src_w - 1, 0))
    y0 = min(max(math.floor(box[1]), 0), max(src_h - 1, 0))
    x1 = max(min(math.ceil(box[2]), src_w), x0 + 1)
    y1 = max(min(math.ceil(box[3]), src_h), y0 + 1)
    return x0, y0, x1, y1


def mask_in_box(
    proto_prob: NDArray[np.floating[Any]],
    box: Box,
    info: LetterboxInfo,
    input_size: int,
    src_w: int,
    src_h: int,
) -> tuple[BoolArray, int, int]:
    """Resample one prototype-resolution probability map into the instance's box crop.

    Equivalent to "upsample to input size, un-letterbox, crop to box" done as one bilinear
    resampling at the source-pixel centres of the box (separable: ``Wy @ P @ Wx.T``), then
    thresholded at 0.5; pixels whose centre lies outside the float box are cleared.
    Returns ``(mask, origin_x, origin_y)``.
    """
    mh, mw = proto_prob.shape
    x0, y0, x1, y1 = crop_box_of(box, src_w, src_h)
    xs = np.arange(x0, x1, dtype=np.float64) + 0.5
    ys = np.arange(y0, y1, dtype=np.float64) + 0.5
    # source px centre -> input px -> proto pixel-centre index
    px = (xs * info.scale + info.pad_x) * (mw / input_size) - 0.5
    py = (ys * info.scale + info.pad_y) * (mh / input_size) - 0.5
    wy = _interp_matrix(py, mh)
    wx = _interp_matrix(px, mw)
    prob = wy @ np.asarray(proto_prob, dtype=np.float32) @ wx.T
    mask = prob > 0.5
    inside_x = (xs >= box[0]) & (xs <= box[2])
    inside_y = (ys >= box[1]) & (ys <= box[3])
    mask &= inside_y[:, None] & inside_x[None, :]
    return mask, x0, y0


def decode_segment(
    output0: NDArray[np.floating[Any]],
    protos: NDArray[np.floating[Any]],
    conf: float,
    iou: float,
    info: LetterboxInfo,
    src_w: int,
    src_h: int,
    *,
    input_size: int,
    nc: int | None = None,
    max_det: int = 100,
    polygon_epsilon: float = 1.5,
) -> list[SegInstance]:
    """Decode one image's segment outputs: ``output0 [4 + nc + 32, N]``, ``protos [32, h, w]``.

    Masks are ``sigmoid(coeffs @ protos)`` resampled to the instance's box crop in source pixels
    and thresholded at 0.5 (see ``mask_in_box``). The polygon is the outer contour of the
    largest 8-connected component of the mask, traced on pixel centres and simplified with
    Douglas-Peucker (``polygon_epsilon`` px); instances whose mask is empty get the box as
    polygon. Best score first.
    """
    nm = protos.shape[0]
    if nc is None:
        nc = output0.shape[0] - 4 - nm
    if nc < 1 or output0.shape[0] != 4 + nc + nm:
        raise ValueError(
            f"segment output0 {output0.shape} does not match {nm} mask coefficients and nc={nc}"
        )
    boxes, scores, classes, anchors = _candidates(output0, nc, conf, iou, max_det)
    if anchors.size == 0:
        return []
    coeffs = np.asarray(output0[4 + nc :, anchors], dtype=np.float32).T  # (K, nm)
    mh, mw = protos.shape[1:]
    logits = coeffs @ np.asarray(protos, dtype=np.float32).reshape(nm, -1)
    probs = (1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))).reshape(-1, mh, mw)
    src_boxes = boxes_to_source(boxes, info, src_w, src_h)
    out: list[SegInstance] = []
    for k in range(anchors.size):
        b = src_boxes[k]
        box: Box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
            continue
        mask, ox, oy = mask_in_box(probs[k], box, info, input_size, src_w, src_h)
        polygon = mask_polygon(mask, ox, oy, epsilon=polygon_epsilon)
        if not polygon:
            polygon = [(box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])]
        out.append(
            SegInstance(
                box=box,
                score=float(scores[k]),
                class_id=int(classes[k]),
                mask=mask,
                origin_x=ox,
                origin_y=oy,
                polygon=polygon,
            )
        )
    return out
