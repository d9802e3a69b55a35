"""YOLO decoders against hand-built tensors with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from pipeline.inference.modelspec import ModelSpecError, parse_names, resolve_model_spec
from pipeline.inference.yolo import (
    PAD_VALUE,
    LetterboxInfo,
    boxes_to_input,
    boxes_to_source,
    decode_detect,
    decode_segment,
    letterbox,
    letterbox_info,
)
from pipeline.vision.contours import mask_polygon, simplify_closed, trace_outer_contour

# ----------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize(
    ("w", "h", "size", "scale", "pad_x", "pad_y", "new_w", "new_h"),
    [
        (800, 400, 400, 0.5, 0, 100, 400, 200),
        (400, 800, 400, 0.5, 100, 0, 200, 400),
        (512, 512, 512, 1.0, 0, 0, 512, 512),
        (100, 50, 512, 5.12, 0, 128, 512, 256),  # small crops are scaled up
        (1280, 960, 320, 0.25, 0, 40, 320, 240),
    ],
)
def test_letterbox_geometry(
    w: int,
    h: int,
    size: int,
    scale: float,
    pad_x: int,
    pad_y: int,
    new_w: int,
    new_h: int,
) -> None:
    info = letterbox_info(w, h, size)
    assert info.scale == pytest.approx(scale)
    assert (info.pad_x, info.pad_y, info.new_w, info.new_h) == (pad_x, pad_y, new_w, new_h)


def test_letterbox_tensor_layout_and_padding() -> None:
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    rgb[:, 100:, 1] = 255  # right half yellow
    tensor, info = letterbox(rgb, 100)
    assert tensor.shape == (3, 100, 100)
    assert tensor.dtype == np.float32
    assert (info.scale, info.pad_x, info.pad_y) == (0.5, 0.0, 25.0)
    # padding rows are 114/255 in every channel
    np.testing.assert_allclose(tensor[:, :25, :], PAD_VALUE)
    np.testing.assert_allclose(tensor[:, 75:, :], PAD_VALUE)
    # content is RGB, 0..1
    np.testing.assert_allclose(tensor[0, 25:75, :], 1.0)
    np.testing.assert_allclose(tensor[1, 30:70, :40], 0.0)
    np.testing.assert_allclose(tensor[1, 30:70, 60:], 1.0)
    np.testing.assert_allclose(tensor[2, 25:75, :], 0.0)


def test_letterbox_identity_when_size_matches() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    tensor, info = letterbox(rgb, 64)
    assert info == LetterboxInfo(1.0, 0.0, 0.0, 64, 64)
    np.testing.assert_array_equal(tensor, rgb.transpose(2, 0, 1).astype(np.float32) / 255)


@pytest.mark.parametrize(("w", "h", "size"), [(1600, 900, 640), (333, 517, 512), (90, 40, 512)])
def test_box_round_trip(w: int, h: int, size: int) -> None:
    info = letterbox_info(w, h, size)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, (20, 2)) * [w, h]
    wh = rng.uniform(1, 30, (20, 2))
    src = np.clip(np.concatenate([xy, xy + wh], axis=1), 0, [w, h, w, h]).astype(np.float32)
    back = boxes_to_source(boxes_to_input(src, info), info, w, h)
    np.testing.assert_allclose(back, src, atol=1e-3)


def test_boxes_to_source_clips_into_padding_and_outside() -> None:
    info = letterbox_info(800, 400, 400)  # pad_y = 100
    boxes = np.array([[-10.0, 50.0, 420.0, 350.0]], np.float32)
    out = boxes_to_source(boxes, info, 800, 400)
    np.testing.assert_allclose(out, [[0.0, 0.0, 800.0, 400.0]])


# ----------------------------------------------------------------------------- detect


def _detect_output(
    rows: list[tuple[float, float, float, float, float, float]],
) -> NDArray[np.float32]:
    """[4 + 2, N] from (cx, cy, w, h, score0, score1) rows."""
    return np.asarray(rows, np.float32).T.copy()


def test_decode_detect_two_classes_nms_and_source_mapping() -> None:
    # source 800x400 letterboxed into 400: scale 0.5, pad_y 100
    info = letterbox_info(800, 400, 400)
    out = _detect_output(
        [
            (50, 150, 20, 20, 0.90, 0.05),  # A: class 0
            (52, 150, 20, 20, 0.80, 0.10),  # overlaps A, same class → suppressed
            (52, 150, 20, 20, 0.05, 0.85),  # overlaps A, other class → kept
            (300, 200, 40, 10, 0.30, 0.20),  # class 0, far away → kept
            (200, 200, 10, 10, 0.10, 0.20),  # below conf
            (200, 200, 10, 10, 0.25, 0.00),  # == conf is not > conf
        ]
    )
    boxes, scores, classes = decode_detect(out, 0.25, 0.5, info, 800, 400)
    np.testing.assert_allclose(scores, [0.90, 0.85, 0.30], rtol=1e-6)
    np.testing.assert_array_equal(classes, [0, 1, 0])
    expected = np.array(
        [
            [(50 - 10) * 2, (150 - 10 - 100) * 2, (50 + 10) * 2, (150 + 10 - 100) * 2],
            [(52 - 10) * 2, (150 - 10 - 100) * 2, (52 + 10) * 2, (150 + 10 - 100) * 2],
            [(300 - 20) * 2, (200 - 5 - 100) * 2, (300 + 20) * 2, (200 + 5 - 100) * 2],
        ],
        np.float32,
    )
    np.testing.assert_allclose(boxes, expected, atol=1e-4)


def test_decode_detect_nothing_above_conf() -> None:
    info = letterbox_info(100, 100, 100)
    out = _detect_output([(10, 10, 5, 5, 0.1, 0.1)])
    boxes, scores, classes = decode_detect(out, 0.25, 0.5, info, 100, 100)
    assert boxes.shape == (0, 4)
    assert scores.shape == (0,)
    assert classes.shape == (0,)


def test_decode_detect_single_class_and_max_det() -> None:
    info = letterbox_info(640, 640, 640)
    rows = [(20.0 + 30 * i, 20.0, 10.0, 10.0, 0.5 + i / 100) for i in range(10)]
    out = np.asarray(rows, np.float32).T
    boxes, scores, classes = decode_detect(out, 0.25, 0.5, info, 640, 640, max_det=4)
    assert boxes.shape == (4, 4)
    np.testing.assert_allclose(scores, [0.59, 0.58, 0.57, 0.56], rtol=1e-6)
    assert set(classes.tolist()) == {0}


# ----------------------------------------------------------------------------- segment


def _seg_tensors(
    size: int, rect_cells: tuple[int, int, int, int], box_in: tuple[float, ...], score: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """output0 [4+2+32, 1] and protos [32, size/4, size/4]: proto 0 = 1 on rect (cells,
    r0:r1, c0:c1), proto 1 = 1; coefficients [10, -5] → mask = rect."""
    m = size // 4
    protos = np.zeros((32, m, m), np.float32)
    r0, r1, c0, c1 = rect_cells
    protos[0, r0:r1, c0:c1] = 1.0
    protos[1] = 1.0
    x1, y1, x2, y2 = box_in
    col = np.zeros(38, np.float32)
    col[:4] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    col[5] = score  # class 1
    col[6], col[7] = 10.0, -5.0
    return col[:, None], protos


def test_decode_segment_rectangle_mask_and_polygon() -> None:
    # proto cells rows 10..19, cols 5..24 → input px y 40..80, x 20..100 (stride 4)
    out0, protos = _seg_tensors(160, (10, 20, 5, 25), (20, 40, 100, 80), 0.9)
    info = letterbox_info(160, 160, 160)
    [inst] = decode_segment(out0, protos, 0.3, 0.5, info, 160, 160, input_size=160)
    assert inst.class_id == 1
    assert inst.score == pytest.approx(0.9)
    assert inst.box == pytest.approx((20, 40, 100, 80))
    assert inst.crop_box == (20, 40, 100, 80)
    assert inst.mask.shape == (40, 80)
    # bilinear upsampling rounds off exactly the four corner pixels
    corners = np.zeros((40, 80), bool)
    corners[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    np.testing.assert_array_equal(inst.mask, ~corners)
    assert inst.area_px == 40 * 80 - 4
    pts = np.asarray(inst.polygon)
    # Douglas-Peucker (epsilon 1.5 px) may shave the rounded corners
    np.testing.assert_allclose(pts.min(axis=0), [20.5, 40.5], atol=1.5)
    np.testing.assert_allclose(pts.max(axis=0), [99.5, 79.5], atol=1.5)
    assert 4 <= len(pts) <= 8
    assert _shoelace(inst.polygon) == pytest.approx(79 * 39, abs=1.5 * 2 * (79 + 39))
    exact = mask_polygon(inst.mask, inst.origin_x, inst.origin_y, epsilon=0.0)
    assert len(exact) == 2 * 79 + 2 * 39 - 4  # every boundary pixel centre but the 4 corners


def test_decode_segment_mask_is_cropped_to_box() -> None:
    # mask region larger than the box: only the box part is kept
    out0, protos = _seg_tensors(160, (0, 40, 0, 40), (30, 30, 60, 50), 0.8)
    info = letterbox_info(160, 160, 160)
    [inst] = decode_segment(out0, protos, 0.3, 0.5, info, 160, 160, input_size=160)
    assert inst.crop_box == (30, 30, 60, 50)
    assert inst.mask.all()  # the box cut through the inside of the region: no rounding


def test_decode_segment_matches_naive_resampling_with_letterbox() -> None:
    """Box-crop mask == bilinear sample of the proto map at each source pixel's input point."""
    rng = np.random.default_rng(3)
    size, src_w, src_h = 160, 300, 200  # scale 160/300, pad_y > 0
    info = letterbox_info(src_w, src_h, size)
    m = size // 4
    protos = rng.normal(0, 1, (32, m, m)).astype(np.float32)
    protos = ndimage.gaussian_filter(protos, (0, 3, 3)).astype(np.float32) * 8
    col = np.zeros(38, np.float32)
    col[:4] = [80, 80, 100, 60]  # input px box 30..130 x 50..110
    col[4] = 0.7
    col[6:] = rng.normal(0, 1, 32)
    [inst] = decode_segment(col[:, None], protos, 0.3, 0.5, info, src_w, src_h, input_size=size)
    prob = 1 / (1 + np.exp(-(col[6:] @ protos.reshape(32, -1)).reshape(m, m)))
    x0, y0, x1, y1 = inst.crop_box
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    px = (xx * info.scale + info.pad_x) * (m / size) - 0.5
    py = (yy * info.scale + info.pad_y) * (m / size) - 0.5
    ref = ndimage.map_coordinates(prob, [py, px], order=1, mode="nearest") > 0.5
    bx1, by1, bx2, by2 = inst.box
    ref &= (xx >= bx1) & (xx <= bx2) & (yy >= by1) & (yy <= by2)
    assert 0 < inst.mask.sum() < inst.mask.size
    # float rounding may flip pixels sitting exactly on the 0.5 level
    assert np.count_nonzero(inst.mask != ref) <= 2


def test_decode_segment_nms_and_conf() -> None:
    a, protos = _seg_tensors(160, (10, 20, 5, 25), (20, 40, 100, 80), 0.9)
    b, _ = _seg_tensors(160, (10, 20, 5, 25), (22, 40, 100, 80), 0.8)  # duplicate → NMS
    c, _ = _seg_tensors(160, (10, 20, 5, 25), (0, 0, 10, 10), 0.2)  # low score
    out0 = np.concatenate([a, b, c], axis=1)
    info = letterbox_info(160, 160, 160)
    insts = decode_segment(out0, protos, 0.3, 0.5, info, 160, 160, input_size=160)
    assert [i.score for i in insts] == [pytest.approx(0.9)]


def test_decode_segment_rejects_bad_layout() -> None:
    info = letterbox_info(160, 160, 160)
    with pytest.raises(ValueError, match="mask coefficients"):
        decode_segment(
            np.zeros((6, 3), np.float32),
            np.zeros((32, 40, 40), np.float32),
            0.3,
            0.5,
            info,
            160,
            160,
            input_size=160,
        )


# ----------------------------------------------------------------------------- polygons


def _shoelace(points: list[tuple[float, float]]) -> float:
    p = np.asarray(points, np.float64)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def test_trace_single_pixel_and_block() -> None:
    one = np.zeros((5, 5), bool)
    one[2, 3] = True
    assert trace_outer_contour(one) == [(2, 3)]
    block = np.zeros((5, 5), bool)
    block[1:3, 1:3] = True
    assert trace_outer_contour(block) == [(1, 1), (1, 2), (2, 2), (2, 1)]
    assert trace_outer_contour(np.zeros((3, 3), bool)) == []


def test_trace_visits_the_outer_boundary_only() -> None:
    mask = np.zeros((20, 20), bool)
    mask[2:18, 3:17] = True
    mask[6:12, 7:12] = False  # a hole: not part of the outer contour
    contour = trace_outer_contour(mask)
    boundary = mask & ~ndimage.binary_erosion(mask, np.ones((3, 3), bool))
    outer = boundary.copy()
    outer[5:13, 6:13] = False  # drop the hole's rim
    assert set(contour) == {tuple(p) for p in np.argwhere(outer)}
    assert len(contour) == len(set(contour))


def test_trace_follows_diagonal_connections() -> None:
    mask = np.eye(6, dtype=bool)
    contour = trace_outer_contour(mask)
    assert set(contour) == {(i, i) for i in range(6)}


def test_mask_polygon_of_disk_and_largest_component() -> None:
    yy, xx = np.mgrid[0:120, 0:160]
    disk = (xx - 60) ** 2 + (yy - 60) ** 2 <= 40**2
    disk[5:15, 140:155] = True  # smaller second component, ignored
    poly = mask_polygon(disk, 100, 200, epsilon=1.0)
    pts = np.asarray(poly)
    assert 8 <= len(poly) < 200  # simplified
    assert np.all(pts[:, 0] < 100 + 130)  # nothing from the small component
    np.testing.assert_allclose(pts.mean(axis=0), [160.5, 260.5], atol=1.5)
    # pixel-centre contour: area ≈ disk area minus half a pixel of perimeter
    assert _shoelace(poly) == pytest.approx(np.pi * 40**2, rel=0.05)
    assert mask_polygon(np.zeros((4, 4), bool)) == []


def test_simplify_closed_keeps_corners() -> None:
    square = [(float(x), 0.0) for x in range(10)]
    square += [(10.0, float(y)) for y in range(10)]
    square += [(float(x), 10.0) for x in range(10, 0, -1)]
    square += [(0.0, float(y)) for y in range(10, 0, -1)]
    out = simplify_closed(np.asarray(square, np.float64), 0.5)
    assert sorted(map(tuple, out.tolist())) == [(0.0, 0.0), (0.0, 10.0), (10.0, 0.0), (10.0, 10.0)]


# ----------------------------------------------------------------------------- model spec


def test_parse_names_forms() -> None:
    assert parse_names("{0: 'plant', 1: 'weed'}") == ["plant", "weed"]
    assert parse_names({"1": "b", "0": "a"}) == ["a", "b"]
    assert parse_names(["x", "y"]) == ["x", "y"]
    with pytest.raises(ModelSpecError):
        parse_names("__import__('os').system('true')")
    with pytest.raises(ModelSpecError):
        parse_names("{0: 'a', 2: 'b'}")
    with pytest.raises(ModelSpecError):
        parse_names(42)


def test_resolve_model_spec_sources(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    meta = {"names": "{0: 'plant', 1: 'weed'}", "imgsz": "[640, 640]", "task": "detect"}
    spec = resolve_model_spec(model, kind="detect", metadata=meta, input_size=512)
    assert (spec.class_names, spec.input_size, spec.nc) == (["plant", "weed"], 640, 2)

    # settings names win over metadata; static input shape wins over imgsz
    spec = resolve_model_spec(
        model,
        kind="detect",
        class_names=["a"],
        metadata=meta,
        input_shape=[1, 3, 320, 320],
    )
    assert (spec.class_names, spec.input_size) == (["a"], 320)

    # the sidecar wins over metadata
    model.with_suffix(".json").write_text(
        json.dumps({"names": ["s0", "s1", "s2"], "imgsz": 256, "task": "detect"})
    )
    spec = resolve_model_spec(model, kind="detect", metadata=meta)
    assert (spec.class_names, spec.input_size) == (["s0", "s1", "s2"], 256)

    with pytest.raises(ModelSpecError, match="expected 'segment'"):
        resolve_model_spec(model, kind="segment")


def test_resolve_model_spec_without_names_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"no class names.*SEG_CLASS_NAMES"):
        resolve_model_spec(tmp_path / "seg.onnx", kind="segment", input_size=1024)


def test_decode_detect_rejects_end2end_layout() -> None:
    info = letterbox_info(640, 640, 640)
    with pytest.raises(ValueError, match="without NMS"):
        decode_detect(np.zeros((300, 6), np.float32), 0.25, 0.5, info, 640, 640, nc=2)
