"""Visualization (AVIF) and thumbnails (JPEG). Pure: pixels in, bytes or pixels out."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont, features

from pipeline.vision.bands import BandParams, counted_vegetation
from pipeline.vision.types import PhotoAnalysis, Segment

__all__ = [
    "CONTAINER_COLOURS",
    "draw_analysis",
    "encode_avif",
    "estimated_vegetation",
    "make_thumbnail",
    "overlay_alpha",
    "render_visualization",
    "vegetation_overlay_png",
]

#: Outline colour per container type.
CONTAINER_COLOURS: dict[str, tuple[int, int, int]] = {
    "segment": (0, 160, 255),
    "box": (255, 190, 0),
    "plug": (210, 80, 255),
    "almacigo": (0, 220, 200),
}
_OTHER_COLOUR = (255, 255, 255)
DETECTION_COLOUR = (60, 255, 60)
ESTIMATE_COLOUR = (255, 0, 200)  # magenta: apart from foliage, soil and outlines
_ESTIMATE_ALPHA = 0.6
_ESTIMATE_ALPHA_8 = round(255 * _ESTIMATE_ALPHA)
_FILL_ALPHA = 40

VegetationMasks = list[tuple[int, int, NDArray[np.bool_]]]


def _as_rgb(rgb: NDArray[Any]) -> NDArray[np.uint8]:
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"empty image {a.shape}")
    return np.ascontiguousarray(a)


def _as_image(picture: NDArray[Any] | Image.Image) -> Image.Image:
    if isinstance(picture, Image.Image):
        if picture.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {picture.mode}")
        return picture
    return Image.fromarray(_as_rgb(picture))


def make_thumbnail(
    picture: NDArray[np.uint8] | Image.Image, *, longest_side: int = 300, quality: int = 85
) -> bytes:
    """JPEG thumbnail: longest side ``longest_side`` px, aspect kept, never upscaled.
    ``picture`` (an RGB array or Pillow image) is not modified."""
    if longest_side < 1:
        raise ValueError(f"longest_side must be >= 1, got {longest_side}")
    image = _as_image(picture)
    w, h = image.size
    scale = min(1.0, longest_side / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0) if scale < 1 else image
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_avif(
    picture: NDArray[np.uint8] | Image.Image,
    *,
    quality: int = 85,
    speed: int = 4,
    max_threads: int | None = None,
) -> bytes:
    """Real AVIF bytes (Pillow's libavif encoder; ``max_threads`` None: Pillow's default,
    one per core).

    Raises ``RuntimeError`` when this Pillow cannot encode AVIF. It never falls back to
    another format: the original stored WebP bytes under the AVIF name and content type.
    """
    if not features.check("avif"):
        raise RuntimeError(
            "this Pillow build has no AVIF encoder (PIL.features.check('avif') is False); "
            "install Pillow >= 11.3 wheels, which bundle libavif, to render visualizations"
        )
    image = _as_image(picture)
    buf = io.BytesIO()
    options: dict[str, Any] = {"quality": quality, "speed": speed}
    if max_threads is not None:
        options["max_threads"] = max_threads
    try:
        image.save(buf, format="AVIF", **options)
    except (KeyError, OSError, ValueError) as exc:
        raise RuntimeError(f"AVIF encoding failed: {exc}") from exc
    data = buf.getvalue()
    if data[4:8] != b"ftyp" or data[8:12] not in (b"avif", b"avis"):
        raise RuntimeError("the AVIF encoder produced bytes that are not an AVIF file")
    return data


# ------------------------------------------------------------------------ visualization


def _segment_box(seg: Segment, width: int, height: int) -> tuple[int, int, int, int] | None:
    x0 = max(0, int(np.floor(seg.bbox[0])))
    y0 = max(0, int(np.floor(seg.bbox[1])))
    x1 = min(width, int(np.ceil(seg.bbox[2])))
    y1 = min(height, int(np.ceil(seg.bbox[3])))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _segment_mask(seg: Segment, box: tuple[int, int, int, int]) -> NDArray[np.bool_]:
    x0, y0, x1, y1 = box
    if len(seg.polygon) < 3:
        return np.ones((y1 - y0, x1 - x0), dtype=bool)
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(canvas).polygon([(x - x0, y - y0) for x, y in seg.polygon], fill=255)
    return np.asarray(canvas) > 0


def estimated_vegetation(
    rgb: NDArray[np.uint8], analysis: PhotoAnalysis, params: BandParams | None = None
) -> VegetationMasks:
    """Per segment, ``(x0, y0, mask)``: the undetected vegetation band estimation counts,
    recomputed from the photo and the analysis (segment polygon as its mask; the bbox when
    it has no polygon). ``mask`` is crop-local, placed at ``(x0, y0)`` in the photo."""
    image = _as_rgb(rgb)
    p = params or BandParams()
    height, width = image.shape[:2]
    out: VegetationMasks = []
    for seg in analysis.segments:
        box = _segment_box(seg, width, height)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        boxes = np.array(
            [
                (d.cx - d.w / 2, d.cy - d.h / 2, d.cx + d.w / 2, d.cy + d.h / 2)
                for d in analysis.detections
                if d.segment_index == seg.index
            ],
            dtype=np.float64,
        ).reshape(-1, 4)
        boxes -= np.array([x0, y0, x0, y0], dtype=np.float64)
        mask = counted_vegetation(image[y0:y1, x0:x1], _segment_mask(seg, box), boxes, p)
        out.append((x0, y0, mask))
    return out


def vegetation_overlay_png(masks: Sequence[tuple[int, int, Any]], width: int, height: int) -> bytes:
    """The placed ``(x0, y0, mask)`` masks as one ``width × height`` 1-bit PNG (clipped at
    the border; overlapping masks add up); ``b""`` when no mask has a pixel. It is how the
    inference step hands the counted vegetation to the renderer: ~1.5 MB of bits for 12 MP,
    a few KB to a few hundred KB once compressed."""
    canvas: Image.Image | None = None
    for x0, y0, mask_any in masks:
        mask = np.asarray(mask_any, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"vegetation masks must be 2-D, got {mask.shape}")
        if not mask.any():
            continue
        if canvas is None:
            canvas = Image.new("1", (width, height), 0)
        piece = Image.fromarray(mask)
        canvas.paste(1, (int(x0), int(y0), int(x0) + mask.shape[1], int(y0) + mask.shape[0]), piece)
    if canvas is None:
        return b""
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def overlay_alpha(png: bytes, size: tuple[int, int]) -> Image.Image | None:
    """The blend mask (mode ``L``) of a :func:`vegetation_overlay_png` for a picture of
    ``size``: ``ESTIMATE_ALPHA`` where there is counted vegetation, resized smoothly when the
    picture is smaller than the photo. ``None`` for ``b""``."""
    if not png:
        return None
    with Image.open(io.BytesIO(png)) as bits:
        alpha = bits.convert("L").point(lambda v: _ESTIMATE_ALPHA_8 if v else 0)
    if alpha.size != size:
        alpha = alpha.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return alpha


def _placed_alpha(
    masks: Sequence[tuple[int, int, Any]], size: tuple[int, int]
) -> Image.Image | None:
    png = vegetation_overlay_png(masks, *size)
    return overlay_alpha(png, size)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def legend_lines(analysis: PhotoAnalysis) -> list[str]:
    """The legend's text: detected, estimated and mean detection confidence."""
    confidences = [d.confidence for d in analysis.detections]
    confidence = f"{100.0 * sum(confidences) / len(confidences):.0f}%" if confidences else "n/a"
    return [
        f"Detected {analysis.total_detected}",
        f"Estimated {analysis.total_estimated}",
        f"Confidence {confidence}",
    ]


def draw_analysis(
    image: Image.Image,
    analysis: PhotoAnalysis,
    *,
    width: int | None = None,
    height: int | None = None,
    overlay: Image.Image | None = None,
) -> None:
    """Draw the analysis onto ``image`` (RGB, modified in place; no whole-image copies).

    Draws, in order: the estimated (undetected) vegetation — ``overlay``, a mode ``L`` blend
    mask of the image's size (:func:`overlay_alpha`) — in translucent magenta, each segment
    (polygon, or bbox without one) with a translucent fill and an outline coloured by
    container type, each detection as its box and its circle, and a legend box
    "Detected N / Estimated M / Confidence X%". Analysis coordinates (photo pixels of
    ``width × height``, default the analysis' size) are scaled to the image. Line widths and
    font size follow the image size.
    """
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}")
    img_w, img_h = image.size
    photo_w = width or analysis.width
    photo_h = height or analysis.height
    sx = img_w / photo_w if photo_w > 0 else 1.0
    sy = img_h / photo_h if photo_h > 0 else 1.0
    if overlay is not None:
        if overlay.size != image.size or overlay.mode != "L":
            raise ValueError(f"overlay must be an L image of {image.size}")
        image.paste(ESTIMATE_COLOUR, (0, 0, img_w, img_h), overlay)

    longest = max(img_w, img_h)
    line = max(1, round(longest / 500))
    draw = ImageDraw.Draw(image, "RGBA")  # RGBA colours blend into the RGB image

    for seg in analysis.segments:
        colour = CONTAINER_COLOURS.get(seg.container_type, _OTHER_COLOUR)
        if len(seg.polygon) >= 3:
            points = [(x * sx, y * sy) for x, y in seg.polygon]
            draw.polygon(points, fill=(*colour, _FILL_ALPHA))
            draw.line([*points, points[0]], fill=(*colour, 255), width=line + 1, joint="curve")
        else:
            x1, y1, x2, y2 = seg.bbox
            draw.rectangle(
                (x1 * sx, y1 * sy, x2 * sx, y2 * sy),
                fill=(*colour, _FILL_ALPHA),
                outline=(*colour, 255),
                width=line + 1,
            )

    for det in analysis.detections:
        cx, cy, w, h = det.cx * sx, det.cy * sy, det.w * sx, det.h * sy
        draw.rectangle(
            (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
            outline=(*DETECTION_COLOUR, 140),
            width=max(1, line // 2),
        )
        r = (w + h) / 4.0
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(*DETECTION_COLOUR, 255), width=line)

    font = _font(max(10, round(longest / 45)))
    lines = legend_lines(analysis)
    pad = max(4, round(longest / 150))
    bboxes = [draw.textbbox((0, 0), text, font=font) for text in lines]
    text_w = max(b[2] - b[0] for b in bboxes)
    line_h = max(b[3] - b[1] for b in bboxes) + pad // 2
    draw.rectangle((pad, pad, pad * 3 + text_w, pad * 3 + line_h * len(lines)), fill=(0, 0, 0, 170))
    for i, text in enumerate(lines):
        draw.text((pad * 2, pad * 2 + i * line_h), text, fill=(255, 255, 255, 255), font=font)


def render_visualization(
    rgb: NDArray[np.uint8],
    analysis: PhotoAnalysis,
    *,
    vegetation_masks: list[tuple[int, int, NDArray[np.bool_]]] | None = None,
    band_params: BandParams | None = None,
) -> NDArray[np.uint8]:
    """The photo with the analysis drawn over it (see :func:`draw_analysis`); returns a new
    ``(H, W, 3) uint8`` array, ``rgb`` is not modified.

    ``vegetation_masks`` are ``(x0, y0, mask)`` placed at that offset (photo pixels);
    ``None`` recomputes them from the photo with :func:`estimated_vegetation`
    (``band_params``) when ``rgb`` is the analysis' size, ``[]`` draws none. The workers use
    :func:`draw_analysis` directly, with the overlay the inference step computed.
    """
    base = _as_rgb(rgb)
    height, width = base.shape[:2]
    same_scale = (width, height) == (analysis.width, analysis.height)
    if vegetation_masks is None:
        vegetation_masks = estimated_vegetation(base, analysis, band_params) if same_scale else []
    image = Image.fromarray(base)  # a copy: RGB images are never shared with the array
    draw_analysis(image, analysis, overlay=_placed_alpha(vegetation_masks, image.size))
    return np.asarray(image, dtype=np.uint8).copy()
