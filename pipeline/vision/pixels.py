"""Any Pillow image mode as ``(H, W, 3) uint8`` RGB (pure: image in, array out).

:func:`to_rgb_array` scales high bit depths instead of truncating them and composites
alpha on white; :func:`plain_rgb_mode` says when Pillow's own ``convert("RGB")`` gives the
same pixels (the cheaper path for previews).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = ["plain_rgb_mode", "to_rgb_array"]


def _scale_to_uint8(values: NDArray[Any], max_value: float) -> NDArray[np.uint8]:
    scaled = np.rint(np.clip(values.astype(np.float64), 0.0, max_value) * (255.0 / max_value))
    return scaled.astype(np.uint8)


def _white_composite(rgba: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Composite straight (non-premultiplied) RGBA over white; returns RGB."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def to_rgb_array(im: Image.Image) -> NDArray[np.uint8]:
    """Any Pillow image mode as ``(H, W, 3) uint8`` RGB.

    High bit depth (``I;16*``, ``I``) is scaled from 0..65535 to 0..255 (not truncated),
    ``F`` is clipped to 0..255, alpha (``RGBA``, ``LA``, ``PA``, palette transparency) is
    composited on white, CMYK/YCbCr/LAB/HSV go through Pillow's conversion.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        gray = _scale_to_uint8(np.asarray(im), 65535.0)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if mode == "F":
        gray = _scale_to_uint8(np.asarray(im), 255.0)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return np.ascontiguousarray(_white_composite(rgba))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def plain_rgb_mode(im: Image.Image) -> bool:
    """Whether Pillow's own ``convert("RGB")`` gives what :func:`to_rgb_array` gives."""
    return im.mode in ("RGB", "L", "YCbCr", "CMYK") and "transparency" not in im.info
