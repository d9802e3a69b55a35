"""Visualization (AVIF) and thumbnails (JPEG). Pure: pixels in, bytes out."""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont, features

from pipeline.vision.bands import BandParams, detection_mask, vegetation_mask
from pipeline.vision.types import PhotoAnalysis

AVIF_CONTENT_TYPE = "image/avif"
JPEG_CONTENT_TYPE = "image/jpeg"

SEGMENT_COLOURS: dict[str, tuple[int, int, int]] = {
    "segment": (0, 170, 255),
    "box": (255, 200, 0),
    "plug": (200, 80, 255),
    "almacigo": (255, 90, 90),
}
DETECTION_COLOUR = (40, 255, 60)
ESTIMATE_COLOUR = np.array([255, 120, 0], dtype=np.float32)


def make_thumbnail(rgb: NDArray[np.uint8], *, longest_side: int = 300, quality: int = 85) -> bytes:
    """JPEG whose longest side is ``longest_side`` (never upscaled), aspect kept."""
    image = Image.fromarray(rgb)
    image.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def estimated_vegetation(
    rgb: NDArray[np.uint8], analysis: PhotoAnalysis, params: BandParams | None = None
) -> list[tuple[int, int, NDArray[np.bool_]]]:
    """Per segment, ``(x0, y0, mask)`` of the vegetation band estimation counted (crop-local)."""
    p = params or BandParams()
    height, width = rgb.shape[:2]
    out: list[tuple[int, int, NDArray[np.bool_]]] = []
    for seg in analysis.segments:
        x0, y0 = max(0, int(seg.bbox[0])), max(0, int(seg.bbox[1]))
        x1, y1 = min(width, int(np.ceil(seg.bbox[2]))), min(height, int(np.ceil(seg.bbox[3])))
        if x1 <= x0 or y1 <= y0:
            continue
        mask_img = Image.new("1", (x1 - x0, y1 - y0), 0)
        if len(seg.polygon) >= 3:
            ImageDraw.Draw(mask_img).polygon([(x - x0, y - y0) for x, y in seg.polygon], fill=1)
        else:
            mask_img.paste(1, (0, 0, x1 - x0, y1 - y0))
        seg_mask = np.asarray(mask_img, dtype=bool)
        boxes = np.array(
            [
                (d.cx - d.w / 2, d.cy - d.h / 2, d.cx + d.w / 2, d.cy + d.h / 2)
                for d in analysis.detections
                if d.segment_index == seg.index
            ],
            dtype=np.float64,
        ).reshape(-1, 4) - np.array([x0, y0, x0, y0], dtype=np.float64)
        crop = rgb[y0:y1, x0:x1]
        residual = seg_mask & ~detection_mask(seg_mask.shape, boxes, p)
        out.append((x0, y0, residual & vegetation_mask(crop, within=seg_mask)))
    return out


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def render_visualization(
    rgb: NDArray[np.uint8],
    analysis: PhotoAnalysis,
    *,
    vegetation_masks: list[tuple[int, int, NDArray[np.bool_]]] | None = None,
) -> NDArray[np.uint8]:
    """Segments, detections, estimated vegetation and a legend drawn over the photo."""
    canvas = rgb.astype(np.float32, copy=True)
    masks = (
        vegetation_masks if vegetation_masks is not None else estimated_vegetation(rgb, analysis)
    )
    for x0, y0, mask in masks:
        region = canvas[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        region[mask] = region[mask] * 0.45 + ESTIMATE_COLOUR * 0.55
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    scale = max(image.size) / 1000
    line = max(2, round(2 * scale))
    for seg in analysis.segments:
        colour = SEGMENT_COLOURS.get(seg.container_type, (255, 255, 255))
        if len(seg.polygon) >= 3:
            draw.line([*seg.polygon, seg.polygon[0]], fill=colour, width=line + 1)
        else:
            draw.rectangle(seg.bbox, outline=colour, width=line + 1)
    for det in analysis.detections:
        r = max(det.w, det.h) / 2
        draw.ellipse(
            (det.cx - r, det.cy - r, det.cx + r, det.cy + r), outline=DETECTION_COLOUR, width=line
        )
    confidences = [d.confidence for d in analysis.detections]
    mean_conf = sum(confidences) / len(confidences) if confidences else 0.0
    lines = [
        f"Detected   {analysis.total_detected}",
        f"Estimated  {analysis.total_estimated}",
        f"Confidence {mean_conf * 100:.0f}%",
    ]
    font = _font(max(12, round(22 * scale)))
    pad = max(6, round(10 * scale))
    boxes = [draw.textbbox((0, 0), text, font=font) for text in lines]
    text_w = max(b[2] - b[0] for b in boxes)
    line_h = max(b[3] - b[1] for b in boxes) + pad // 2
    draw.rectangle((pad, pad, pad * 3 + text_w, pad * 3 + line_h * len(lines)), fill=(0, 0, 0))
    for i, text in enumerate(lines):
        draw.text((pad * 2, pad * 2 + i * line_h), text, fill=(255, 255, 255), font=font)
    return np.asarray(image, dtype=np.uint8)


def encode_avif(rgb: NDArray[np.uint8], *, quality: int = 85, speed: int = 4) -> bytes:
    """AVIF bytes. Never falls back to another format under the AVIF name."""
    if not features.check("avif"):
        raise RuntimeError(
            "this Pillow has no AVIF encoder: install Pillow ≥ 11.3 wheels (libavif bundled)"
        )
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="AVIF", quality=quality, speed=speed)
    data = buf.getvalue()
    if data[4:12] not in (b"ftypavif", b"ftypavis"):
        raise RuntimeError("the AVIF encoder produced something that is not AVIF")
    return data
