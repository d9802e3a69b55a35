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

import ast
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

from pipeline.vision.merge import batched_nms

logger = logging.getLogger("pipeline.inference")

ModelKind = Literal["detect", "segment"]
PAD_VALUE = 114.0 / 255.0
NUM_MASK_COEFFS = 32

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
Box = tuple[float, float, float, float]


class ModelSpecError(ValueError):
    """A model cannot be described: class names, input size or task are missing or wrong."""


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


# --------------------------------------------------------------------------------------
# Polygons
# --------------------------------------------------------------------------------------

# 8 neighbours, clockwise on screen (y down), starting West.
_DIRS: tuple[tuple[int, int], ...] = (
    (0, -1),
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
    (1, 0),
    (1, -1),
)
_DIR_INDEX = {d: i for i, d in enumerate(_DIRS)}


def largest_component(mask: BoolArray) -> BoolArray:
    """The largest 8-connected component of ``mask`` (empty mask in, empty mask out)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask.astype(bool, copy=False)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(sizes.argmax()))


def trace_outer_contour(mask: BoolArray) -> list[tuple[int, int]]:
    """Moore-neighbour trace of the outer boundary of the component holding the first
    foreground pixel in raster order. Returns ``(row, col)`` pixel positions, clockwise."""
    count = int(np.count_nonzero(mask))
    if count == 0:
        return []
    h, w = mask.shape
    first = int(np.argmax(mask.reshape(-1)))  # first foreground pixel in raster order
    start = (first // w, first % w)
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask

    def on(r: int, c: int) -> bool:
        return bool(padded[r + 1, c + 1])

    contour = [start]
    cur = start
    back = 0  # direction from cur to the backtrack pixel (West of start is background)
    second: tuple[int, int] | None = None
    limit = 4 * count + 16
    for _ in range(limit):
        nxt: tuple[int, int] | None = None
        prev_dir = back
        for k in range(1, 9):
            d = (back + k) % 8
            dr, dc = _DIRS[d]
            if on(cur[0] + dr, cur[1] + dc):
                nxt = (cur[0] + dr, cur[1] + dc)
                pr, pc = _DIRS[prev_dir]
                b_abs = (cur[0] + pr, cur[1] + pc)
                back = _DIR_INDEX[(b_abs[0] - nxt[0], b_abs[1] - nxt[1])]
                break
            prev_dir = d
        if nxt is None:  # isolated pixel
            return contour
        if second is None:
            second = nxt
        elif cur == start and nxt == second:
            contour.pop()  # the start appended again on arrival
            return contour
        contour.append(nxt)
        cur = nxt
    return contour


def simplify_closed(points: NDArray[np.float64], epsilon: float) -> NDArray[np.float64]:
    """Douglas-Peucker simplification of a closed polygon (first point not repeated)."""
    n = points.shape[0]
    if n <= 3 or epsilon <= 0:
        return points
    far = int(np.argmax(np.hypot(*(points - points[0]).T)))
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[far] = True
    ring = np.concatenate([points, points[:1]], axis=0)
    stack = [(0, far), (far, n)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b = ring[i], ring[j]
        seg = ring[i + 1 : j]
        ab = b - a
        norm = math.hypot(ab[0], ab[1])
        if norm == 0:
            dist = np.hypot(*(seg - a).T)
        else:
            dist = np.abs(ab[0] * (seg[:, 1] - a[1]) - ab[1] * (seg[:, 0] - a[0])) / norm
        k = int(np.argmax(dist))
        if dist[k] > epsilon:
            m = i + 1 + k
            keep[m % n] = True
            stack.append((i, m))
            stack.append((m, j))
    return points[keep]


def mask_polygon(
    mask: BoolArray, origin_x: int = 0, origin_y: int = 0, *, epsilon: float = 1.5
) -> list[tuple[float, float]]:
    """Simplified outer contour (source px, ``(x, y)`` of pixel centres) of the largest
    component of a crop-resolution mask placed at ``(origin_x, origin_y)``; [] if empty."""
    if not mask.any():
        return []
    contour = trace_outer_contour(largest_component(mask))
    pts = np.asarray([(c + origin_x + 0.5, r + origin_y + 0.5) for r, c in contour], np.float64)
    pts = simplify_closed(pts, epsilon)
    return [(round(float(x), 2), round(float(y), 2)) for x, y in pts]


# --------------------------------------------------------------------------------------
# Model description
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the decoders need to know about an exported model."""

    path: Path
    class_names: list[str]
    input_size: int
    kind: ModelKind

    @property
    def nc(self) -> int:
        return len(self.class_names)


def parse_names(value: Any) -> list[str]:
    """Class names from a sidecar/metadata value: a list, a ``{index: name}`` dict, or the
    python-literal string Ultralytics writes (``"{0: 'plant', 1: 'weed'}"``) — parsed with
    ``ast.literal_eval``, never ``eval``."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as exc:
            raise ModelSpecError(f"cannot parse class names {value[:80]!r}: {exc}") from None
    if isinstance(value, Mapping):
        try:
            items = sorted((int(k), str(v)) for k, v in value.items())
        except (TypeError, ValueError) as exc:
            raise ModelSpecError(f"class-name keys must be integers: {exc}") from None
        if [k for k, _ in items] != list(range(len(items))):
            raise ModelSpecError(f"class-name keys must be 0..n-1, got {[k for k, _ in items]}")
        return [v for _, v in items]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ModelSpecError(f"class names must be a list or {{index: name}} dict, got {value!r:.80}")


def _parse_imgsz(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, int) for v in value):
        if len(set(value)) != 1:
            raise ModelSpecError(f"only square inputs are supported, got imgsz {list(value)}")
        return int(value[0])
    return None


def sidecar_path(model_path: Path) -> Path:
    """``model.onnx`` → ``model.json`` (the sidecar describing names, imgsz and task)."""
    return model_path.with_suffix(".json")


def resolve_model_spec(
    path: Path,
    *,
    kind: ModelKind,
    class_names: Sequence[str] | None = None,
    input_size: int | None = None,
    metadata: Mapping[str, str] | None = None,
    input_shape: Sequence[Any] | None = None,
) -> ModelSpec:
    """Describe a model.

    Class names, first found wins: ``class_names`` (settings), the JSON sidecar
    ``<model>.json`` (``{"names": [...], "imgsz": N, "task": "detect"|"segment"}``), the ONNX
    metadata props Ultralytics writes (``names`` as a python-literal dict string).
    Input size: a static spatial size in ``input_shape`` (the model accepts nothing else),
    else the sidecar's or metadata's ``imgsz`` (what the model was exported for), else
    ``input_size`` (settings). A ``task`` in sidecar/metadata must equal ``kind``.
    """
    sidecar: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            loaded = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelSpecError(f"cannot read model sidecar {side}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ModelSpecError(f"model sidecar {side} must hold a JSON object")
        sidecar = loaded
    meta = dict(metadata or {})

    task = sidecar.get("task") or meta.get("task")
    if task is not None and task != kind:
        raise ModelSpecError(f"{path} is a {task!r} model, expected {kind!r}")

    names: list[str] | None = None
    if class_names:
        names = list(class_names)
    elif "names" in sidecar:
        names = parse_names(sidecar["names"])
    elif "names" in meta:
        names = parse_names(meta["names"])
    if not names:
        raise ModelSpecError(
            f"no class names for {kind} model {path}: set PLANTPIPE_"
            f"{'SEG' if kind == 'segment' else 'DET'}_CLASS_NAMES, write a sidecar {side} "
            "with {\"names\": [...]}, or export with Ultralytics (metadata 'names')"
        )

    size: int | None = None
    if input_shape is not None and len(input_shape) == 4:
        h, w = input_shape[2], input_shape[3]
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            if h != w:
                raise ModelSpecError(f"{path}: only square inputs are supported, got {h}x{w}")
            size = h
            if input_size is not None and input_size != size:
                logger.warning(
                    "model %s has a fixed %dpx input; configured input size %d ignored",
                    path,
                    size,
                    input_size,
                )
    if size is None:
        size = _parse_imgsz(sidecar.get("imgsz")) or _parse_imgsz(meta.get("imgsz")) or input_size
    if size is None:
        raise ModelSpecError(f"no input size for {kind} model {path}")
    return ModelSpec(path=path, class_names=names, input_size=int(size), kind=kind)
