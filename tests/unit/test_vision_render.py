"""Thumbnails, AVIF encoding and the visualization."""

from __future__ import annotations

import io

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from pipeline.settings import Settings
from pipeline.vision.outputs import PHOTO_OUTPUTS
from pipeline.vision.render import (
    CONTAINER_COLOURS,
    encode_avif,
    estimated_vegetation,
    legend_lines,
    make_thumbnail,
    render_visualization,
)
from pipeline.vision.types import (
    BandEstimate,
    Detection,
    PhotoAnalysis,
    Segment,
    SegmentEstimation,
)


def gradient(w: int, h: int) -> NDArray[np.uint8]:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack(
        [(x * 255 // max(1, w - 1)), (y * 255 // max(1, h - 1)), np.full_like(x, 90)], axis=-1
    ).astype(np.uint8)


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def analysis(
    w: int,
    h: int,
    segments: list[Segment] | None = None,
    detections: list[Detection] | None = None,
    estimated: int = 0,
) -> PhotoAnalysis:
    band = BandEstimate(
        band=0,
        y0=0,
        y1=h,
        detections=0,
        residual_px=0,
        floor_suppressed_px=0,
        vegetation_px=0,
        plant_area_px=2500.0,
        calibrated=False,
        estimated=estimated,
    )
    return PhotoAnalysis(
        width=w,
        height=h,
        segments=segments or [],
        detections=detections or [],
        estimations=[SegmentEstimation(segment_index=0, bands=[band], estimated=estimated)],
        provider="CPUExecutionProvider",
    )


def test_each_rendered_output_is_what_its_content_type_says() -> None:
    picture = Image.new("RGB", (320, 240), (40, 140, 60))
    formats = {"image/avif": "AVIF", "image/jpeg": "JPEG"}
    rendered = PHOTO_OUTPUTS.made_by("render")
    assert [o.name for o in rendered] == ["processed", "thumbnail_processed"]
    for output in rendered:
        assert output.render is not None
        body = output.render(picture, Settings())
        assert Image.open(io.BytesIO(body)).format == formats[output.content_type]
    assert picture.getpixel((0, 0)) == (40, 140, 60)  # the picture is left as it was


# ------------------------------------------------------------------------ thumbnails


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1000, 700), (300, 210)), ((700, 1000), (210, 300)), ((1200, 300), (300, 75))],
)
def test_thumbnail_longest_side_and_aspect(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    w, h = size
    thumb = opened(make_thumbnail(gradient(w, h)))
    assert thumb.format == "JPEG"
    assert thumb.size == expected
    assert thumb.mode == "RGB"


def test_thumbnail_never_upscales_and_honours_options() -> None:
    small = opened(make_thumbnail(gradient(120, 80)))
    assert small.size == (120, 80)
    assert opened(make_thumbnail(gradient(400, 200), longest_side=100)).size == (100, 50)
    noisy = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    assert len(make_thumbnail(noisy, quality=30)) < len(make_thumbnail(noisy, quality=95))


def test_thumbnail_keeps_content() -> None:
    rgb = np.zeros((200, 400, 3), np.uint8)
    rgb[:, :200] = (255, 0, 0)
    rgb[:, 200:] = (0, 0, 255)
    thumb = np.asarray(opened(make_thumbnail(rgb)))
    assert thumb.shape == (150, 300, 3)
    assert thumb[75, 40, 0] > 200 and thumb[75, 260, 2] > 200


# ------------------------------------------------------------------------------ AVIF


def test_avif_is_real_avif() -> None:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:] = (30, 160, 60)
    data = encode_avif(rgb)
    assert data[4:12] in (b"ftypavif", b"ftypavis")
    image = opened(data)
    assert image.format == "AVIF"
    assert image.size == (64, 48)
    centre = np.asarray(image.convert("RGB"))[24, 32].astype(int)
    assert np.abs(centre - (30, 160, 60)).max() <= 12


def test_avif_quality_changes_size() -> None:
    noisy = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    assert len(encode_avif(noisy, quality=20, speed=8)) < len(
        encode_avif(noisy, quality=90, speed=8)
    )


def test_avif_never_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("PIL.features.check", lambda name: False)
    with pytest.raises(RuntimeError, match="AVIF"):
        encode_avif(np.zeros((8, 8, 3), np.uint8))


def test_avif_encoder_failure_is_a_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(self: Image.Image, fp: object, format: str | None = None, **kw: object) -> None:
        raise KeyError(format)

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError, match="AVIF encoding failed"):
        encode_avif(np.zeros((8, 8, 3), np.uint8))


# ---------------------------------------------------------------------- visualization


def test_legend_text() -> None:
    dets = [
        Detection(cx=10, cy=10, w=4, h=4, confidence=c, class_id=0, class_name="plant")
        for c in (0.9, 0.7)
    ]
    assert legend_lines(analysis(100, 100, detections=dets, estimated=5)) == [
        "Detected 2",
        "Estimated 5",
        "Confidence 80%",
    ]
    assert legend_lines(analysis(100, 100))[2] == "Confidence n/a"


def changed_box(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.any(a != b, axis=-1))
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_legend_only_and_scales_with_image() -> None:
    boxes = []
    for side in (300, 1200):
        rgb = np.full((side, side, 3), 200, np.uint8)
        out = render_visualization(rgb, analysis(side, side), vegetation_masks=[])
        assert out.shape == rgb.shape and out.dtype == np.uint8
        assert (rgb == 200).all()  # input untouched
        x0, y0, x1, y1 = changed_box(rgb, out)
        assert x0 < side // 20 and y0 < side // 20  # legend in the top-left corner
        assert out[side - 1, side - 1].tolist() == [200, 200, 200]  # nothing else drawn
        boxes.append((x1 - x0, y1 - y0))
    assert boxes[1][0] > 2 * boxes[0][0] and boxes[1][1] > 2 * boxes[0][1]


def test_segments_detections_and_overlay_are_drawn() -> None:
    w, h = 400, 300
    rgb = np.full((h, w, 3), 120, np.uint8)
    seg = Segment(
        index=0,
        class_name="cajon",
        container_type="box",
        confidence=0.9,
        bbox=(100, 100, 300, 280),
        polygon=[(100, 100), (300, 100), (300, 280), (100, 280)],
    )
    det = Detection(
        cx=200, cy=190, w=40, h=40, confidence=0.8, class_id=0, class_name="plant", segment_index=0
    )
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:20] = True
    out = render_visualization(
        rgb, analysis(w, h, [seg], [det], 1), vegetation_masks=[(20, 200, mask)]
    )
    # the box outline is in the box colour
    r, g, b = CONTAINER_COLOURS["box"]
    edge = out[190, 99:102].astype(int)
    assert any(np.abs(px - (r, g, b)).max() <= 10 for px in edge)
    # translucent fill tints the inside
    assert not np.array_equal(out[150, 150], rgb[150, 150])
    # the detection circle (radius 20 around (200, 190)) passes through (220, 190)
    ring = out[188:193, 218:223].reshape(-1, 3).astype(int)
    assert (ring[:, 1] > 200).any()
    # the estimated-vegetation mask is blended magenta at its offset, and only there
    assert out[210, 35, 0] > 170 and out[210, 35, 1] < 100
    assert out[202, 25].tolist() == [120, 120, 120]


def test_overlay_is_clipped_at_the_border() -> None:
    rgb = np.full((50, 50, 3), 100, np.uint8)
    mask = np.ones((30, 30), bool)
    out = render_visualization(
        rgb, analysis(50, 50), vegetation_masks=[(40, 40, mask), (-10, 45, mask)]
    )
    assert out[45, 45, 0] > out[45, 45, 1]  # tinted
    assert out[49, 0, 0] > out[49, 0, 1]


def test_default_overlay_recomputes_the_estimated_vegetation() -> None:
    w, h = 300, 200
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:] = (120, 80, 50)  # soil
    rgb[50:150, 50:150] = (0, 200, 0)  # undetected plant, inside the segment
    rgb[50:150, 200:280] = (0, 200, 0)  # plant outside the segment
    seg = Segment(
        index=0,
        class_name="segmento",
        container_type="segment",
        confidence=0.9,
        bbox=(20, 20, 180, 180),
        polygon=[(20, 20), (180, 20), (180, 180), (20, 180)],
    )
    a = analysis(w, h, [seg])
    masks = estimated_vegetation(rgb, a)
    assert len(masks) == 1
    x0, y0, mask = masks[0]
    assert (x0, y0) == (20, 20) and mask.shape == (160, 160)
    assert int(mask.sum()) == 100 * 100
    out = render_visualization(rgb, a)
    assert out[100, 100, 0] > 100  # green plant tinted magenta
    assert out[100, 240].tolist() == [0, 200, 0]  # outside every segment: untouched
    same = render_visualization(rgb, a, vegetation_masks=masks)
    assert np.array_equal(out, same)


def test_analysis_coordinates_scale_to_the_image() -> None:
    seg = Segment(
        index=0,
        class_name="plug",
        container_type="plug",
        confidence=0.9,
        bbox=(100, 100, 300, 300),
    )
    rgb = np.full((100, 100, 3), 50, np.uint8)  # a quarter-size rendering of a 400×400 photo
    out = render_visualization(rgb, analysis(400, 400, [seg]), vegetation_masks=[])
    r, g, b = CONTAINER_COLOURS["plug"]
    # the outline lands at 300 / 4 = 75, not at 300
    column = out[70:80, 50].astype(int)
    assert np.abs(column - (r, g, b)).max(axis=1).min() <= 10
    assert out[90, 50].tolist() == [50, 50, 50]


def test_rejects_non_rgb_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        make_thumbnail(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        encode_avif(np.zeros((10, 10, 4), np.uint8))


def test_vegetation_overlay_png_round_trip_and_union() -> None:
    from pipeline.vision.render import overlay_alpha, vegetation_overlay_png

    a = np.zeros((20, 30), bool)
    a[2:10, 5:25] = True
    b = np.zeros((10, 10), bool)
    b[:, :] = True
    png = vegetation_overlay_png([(10, 5, a), (35, 25, b), (-4, -4, b)], 40, 30)
    bits = np.asarray(Image.open(io.BytesIO(png)).convert("L")) > 0
    expected = np.zeros((30, 40), bool)
    expected[7:15, 15:35] = True  # a at (10, 5)
    expected[25:30, 35:40] = True  # b clipped at the bottom-right corner
    expected[0:6, 0:6] = True  # b clipped at the top-left corner
    assert np.array_equal(bits, expected)
    alpha = overlay_alpha(png, (40, 30))
    assert alpha is not None and alpha.mode == "L"
    assert set(np.unique(np.asarray(alpha)).tolist()) == {0, 153}
    half = overlay_alpha(png, (20, 15))
    assert half is not None and half.size == (20, 15)
    assert vegetation_overlay_png([(0, 0, np.zeros((5, 5), bool))], 10, 10) == b""
    assert overlay_alpha(b"", (10, 10)) is None


def test_draw_analysis_scales_to_a_smaller_picture_in_place() -> None:
    from pipeline.vision.render import draw_analysis

    seg = Segment(
        index=0, class_name="plug", container_type="plug", confidence=0.9, bbox=(100, 100, 300, 300)
    )
    picture = Image.new("RGB", (100, 100), (50, 50, 50))
    draw_analysis(picture, analysis(400, 400, [seg]))
    out = np.asarray(picture)
    r, g, b = CONTAINER_COLOURS["plug"]
    assert np.abs(out[70:80, 50].astype(int) - (r, g, b)).max(axis=1).min() <= 10
    assert out[90, 50].tolist() == [50, 50, 50]
