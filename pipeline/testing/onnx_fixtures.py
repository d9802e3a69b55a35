"""Tiny deterministic ONNX models in the exact Ultralytics YOLO layouts, built with onnx.helper.

* ``build_detect_model``: input ``images [B, 3, S, S]``, output ``output0 [B, 6, (S/16)^2]``
  (``cx, cy, w, h, score(plant), score(weed)``). It finds bright-green blobs: per pixel
  ``g = clip(4·(G − (R+B)/2 − 0.25), 0, 1)``; for each cell of a stride-16 grid, over a 48×48
  window centred on the cell, ``m = Σg``, centre = g-weighted centroid, ``w = h = √m``,
  ``score = sigmoid((m − min_mass) / mass_scale)``. A 24×24 green square at scale 1 thus gives
  exactly its own box (score ≈ 1) from every window that holds it whole; windows that see a
  part score low or produce a box inside it (suppressed by NMS). "weed" always scores 0.
  Keep squares ≥ 48 px apart. Batch axis dynamic (``batch=None``) or fixed.
* ``build_segment_model``: input ``images [B, 3, S, S]``, outputs ``output0 [B, 38, 2]`` and
  ``output1 [B, 32, S/4, S/4]``. "Container" pixels are brown (R − B high) or dark
  (mean < 0.35); protos channel 0 is the stride-4 binarised container map, channel 1 is 1.
  Anchor 0 is the bounding box of the container pixels in the left half of the input, anchor 1
  of the right half, both class 1 ("cajon"), score = sigmoid(200·(area fraction − 0.02)), mask
  coefficients ``[10, −5, 0…]`` so the mask is the container map.

``make_nursery_photo`` draws matching photos: light background, dark-grey trays with brown soil
and 24 px green squares on a grid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

BG = (235, 235, 235)
TRAY = (60, 60, 60)
SOIL = (120, 80, 50)
GREEN = (0, 200, 0)


class _Graph:
    """Small helper to add nodes/initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value: NDArray[np.generic] | float, dtype: type = np.float32) -> str:
        arr: NDArray[np.generic] = np.asarray(value, dtype=dtype)
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(arr, name=name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        output = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def mix(self, x: str, weights: Sequence[float], bias: float = 0.0) -> str:
        """Per-pixel ``Σ_c w_c·x_c + bias`` over the channel axis (cheaper than a 1×1 Conv)."""
        w = np.asarray(weights, np.float32).reshape(1, -1, 1, 1)
        summed = self.op(
            "ReduceSum",
            self.op("Mul", x, self.const(w)),
            self.const(np.array([1]), np.int64),
            keepdims=1,
        )
        return self.op("Add", summed, self.const(bias)) if bias else summed

    def clip01(self, x: str) -> str:
        return self.op("Min", self.op("Relu", x), self.const(1.0))


def _finish(
    g: _Graph,
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    path: Path,
    metadata: dict[str, str] | None,
    graph_name: str,
) -> Path:
    graph = helper.make_graph(g.nodes, graph_name, inputs, outputs, initializer=g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="plantpipe-tests"
    )
    model.ir_version = IR_VERSION
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _names_literal(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"{i}: {n!r}" for i, n in enumerate(names)) + "}"


def write_sidecar(model_path: Path, names: Sequence[str], imgsz: int, task: str) -> Path:
    side = model_path.with_suffix(".json")
    side.write_text(json.dumps({"names": list(names), "imgsz": imgsz, "task": task}))
    return side


def build_detect_model(
    path: Path,
    *,
    input_size: int = 512,
    batch: int | None = None,
    names: Sequence[str] = ("plant", "weed"),
    min_mass: float = 450.0,
    mass_scale: float = 25.0,
    metadata: bool = True,
    sidecar: bool = False,
) -> Path:
    """Write the green-blob detect model to ``path`` (see module docstring)."""
    s = input_size
    if s % 16:
        raise ValueError("input_size must be a multiple of 16")
    if len(names) != 2:
        raise ValueError("the fixture detect model has exactly two classes")
    g = _Graph()
    # per-pixel greenness indicator
    green = g.mix("images", [-0.5, 1.0, -0.5], -0.25)
    green = g.clip01(g.op("Mul", green, g.const(4.0)))
    xs = (np.arange(s, dtype=np.float32) + 0.5).reshape(1, 1, 1, s)  # broadcast over rows
    ys = (np.arange(s, dtype=np.float32) + 0.5).reshape(1, 1, s, 1)
    gx = g.op("Mul", green, g.const(xs))
    gy = g.op("Mul", green, g.const(ys))
    stacked = g.op("Concat", green, gx, gy, axis=1)
    # 48×48 window sums at stride 16 = 3×3 sums of 16×16 cell sums (two cheap pools)
    cells = g.op("AveragePool", stacked, kernel_shape=[16, 16], strides=[16, 16])
    pooled = g.op(
        "AveragePool",
        cells,
        kernel_shape=[3, 3],
        strides=[1, 1],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
    )
    sums = g.op("Mul", pooled, g.const(48.0 * 48.0))
    mass, sx, sy = (g.name("mass"), g.name("sx"), g.name("sy"))
    g.nodes.append(
        helper.make_node(
            "Split", [sums, g.const(np.array([1, 1, 1]), np.int64)], [mass, sx, sy], axis=1
        )
    )
    den = g.op("Max", mass, g.const(1e-3))
    cx = g.op("Div", sx, den)
    cy = g.op("Div", sy, den)
    side = g.op("Sqrt", g.op("Relu", mass))
    logit = g.op("Mul", g.op("Sub", mass, g.const(min_mass)), g.const(1.0 / mass_scale))
    score0 = g.op("Sigmoid", logit)
    score1 = g.op("Mul", score0, g.const(0.0))
    rows = g.op("Concat", cx, cy, side, side, score0, score1, axis=1)
    g.op("Reshape", rows, g.const(np.array([0, 6, -1]), np.int64), out="output0")

    b: int | str = batch if batch is not None else "batch"
    n = (s // 16) ** 2
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [b, 3, s, s])]
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [b, 6, n])]
    meta = (
        {
            "names": _names_literal(names),
            "imgsz": f"[{s}, {s}]",
            "task": "detect",
            "stride": "16",
            "batch": str(batch or 1),
        }
        if metadata
        else None
    )
    out = _finish(g, inputs, outputs, path, meta, "fixture_detect")
    if sidecar:
        write_sidecar(path, names, s, "detect")
    return out


def build_segment_model(
    path: Path,
    *,
    input_size: int = 320,
    batch: int | None = 1,
    names: Sequence[str] = ("claro-cajon", "cajon"),
    metadata: bool = True,
    sidecar: bool = False,
) -> Path:
    """Write the two-tray segment model to ``path`` (see module docstring)."""
    s = input_size
    if s % 8:
        raise ValueError("input_size must be a multiple of 8")
    if len(names) != 2:
        raise ValueError("the fixture segment model has exactly two classes")
    h4 = w4 = s // 4
    big = 1.0e4
    g = _Graph()
    brown = g.clip01(g.op("Mul", g.mix("images", [1.0, 0.0, -1.0]), g.const(4.0)))
    dark = g.mix("images", [-1.0 / 3.0] * 3, 0.35)
    dark = g.clip01(g.op("Mul", dark, g.const(20.0)))
    container = g.op("Min", g.op("Add", brown, dark), g.const(1.0))
    pooled = g.op("AveragePool", container, kernel_shape=[4, 4], strides=[4, 4])
    binary = g.op("Cast", g.op("Greater", pooled, g.const(0.5)), to=TensorProto.FLOAT)
    a = np.zeros((1, 32, 1, 1), np.float32)
    a[0, 0] = 1.0
    c = np.zeros((1, 32, 1, 1), np.float32)
    c[0, 1] = 1.0
    g.op("Add", g.op("Mul", binary, g.const(a)), g.const(c), out="output1")

    cols = np.arange(w4, dtype=np.float32).reshape(1, 1, 1, w4)
    rows = np.arange(h4, dtype=np.float32).reshape(1, 1, h4, 1)
    left = (cols < w4 / 2).astype(np.float32)
    coeffs = np.zeros((1, 32, 1), np.float32)
    coeffs[0, 0], coeffs[0, 1] = 10.0, -5.0
    shape3 = g.const(np.array([0, 1, 1]), np.int64)

    anchors: list[str] = []
    for half in (left, 1.0 - left):
        m = g.op("Mul", binary, g.const(half))
        x1 = g.op(
            "ReduceMin",
            g.op("Add", g.op("Mul", m, g.const(cols * 4 - big)), g.const(big)),
            axes=[2, 3],
            keepdims=1,
        )
        y1 = g.op(
            "ReduceMin",
            g.op("Add", g.op("Mul", m, g.const(rows * 4 - big)), g.const(big)),
            axes=[2, 3],
            keepdims=1,
        )
        x2 = g.op("ReduceMax", g.op("Mul", m, g.const(cols * 4 + 4)), axes=[2, 3], keepdims=1)
        y2 = g.op("ReduceMax", g.op("Mul", m, g.const(rows * 4 + 4)), axes=[2, 3], keepdims=1)
        area = g.op("ReduceMean", m, axes=[2, 3], keepdims=1)
        cx = g.op("Mul", g.op("Add", x1, x2), g.const(0.5))
        cy = g.op("Mul", g.op("Add", y1, y2), g.const(0.5))
        bw = g.op("Sub", x2, x1)
        bh = g.op("Sub", y2, y1)
        score = g.op("Sigmoid", g.op("Mul", g.op("Sub", area, g.const(0.02)), g.const(200.0)))
        parts = [g.op("Reshape", t, shape3) for t in (cx, cy, bw, bh, score)]
        zero = g.op("Mul", parts[4], g.const(0.0))
        coeff = g.op("Add", zero, g.const(coeffs))
        anchors.append(g.op("Concat", *parts[:4], zero, parts[4], coeff, axis=1))
    g.op("Concat", *anchors, axis=2, out="output0")

    b: int | str = batch if batch is not None else "batch"
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [b, 3, s, s])]
    outputs = [
        helper.make_tensor_value_info("output0", TensorProto.FLOAT, [b, 38, 2]),
        helper.make_tensor_value_info("output1", TensorProto.FLOAT, [b, 32, h4, w4]),
    ]
    meta = (
        {"names": _names_literal(names), "imgsz": f"[{s}, {s}]", "task": "segment"}
        if metadata
        else None
    )
    out = _finish(g, inputs, outputs, path, meta, "fixture_segment")
    if sidecar:
        write_sidecar(path, names, s, "segment")
    return out


# ------------------------------------------------------------------ photos


@dataclass
class NurseryPhoto:
    rgb: NDArray[np.uint8]
    trays: list[tuple[int, int, int, int]]
    squares: list[tuple[int, int]] = field(default_factory=list)  # top-left of each square
    square: int = 24

    @property
    def centres(self) -> NDArray[np.float64]:
        half = self.square / 2
        return np.array([(x + half, y + half) for x, y in self.squares], dtype=np.float64)


def make_nursery_photo(
    width: int = 1280,
    height: int = 960,
    trays: Sequence[tuple[int, int, int, int]] = ((60, 100, 600, 880), (680, 100, 1220, 880)),
    *,
    square: int = 24,
    pitch: int = 80,
    border: int = 20,
    margin: int = 40,
    skip: float = 0.0,
    seed: int = 0,
) -> NurseryPhoto:
    """Light background, dark-grey trays with a brown soil inset, green squares on a grid
    (``skip`` = fraction of grid positions left empty, chosen with ``seed``)."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = BG
    squares: list[tuple[int, int]] = []
    for x1, y1, x2, y2 in trays:
        rgb[y1:y2, x1:x2] = TRAY
        rgb[y1 + border : y2 - border, x1 + border : x2 - border] = SOIL
        for y in range(y1 + border + margin, y2 - border - margin - square + 1, pitch):
            for x in range(x1 + border + margin, x2 - border - margin - square + 1, pitch):
                if skip and rng.random() < skip:
                    continue
                rgb[y : y + square, x : x + square] = GREEN
                squares.append((x, y))
    return NurseryPhoto(rgb=rgb, trays=list(trays), squares=squares, square=square)


def encode_png(rgb: NDArray[np.uint8]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
