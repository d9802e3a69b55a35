"""Photo validation and decoding. Pure: bytes in, pixels (or a precise refusal) out."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_TYPES: dict[str, str] = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_PIL_FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
DEFAULT_MAX_PIXELS = 100_000_000


class InvalidImage(ValueError):
    """A photo we refuse, with a machine ``code`` and a ``reason`` a person can act on."""

    def __init__(self, reason: str, code: str = "invalid_image") -> None:
        super().__init__(reason, code)
        self.reason = reason
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def normalize_content_type(content_type: str | None) -> str | None:
    """``"Image/JPG; charset=x"`` → ``"image/jpeg"``; None stays None."""
    if content_type is None:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    if not base:
        return None
    return _ALIASES.get(base, base)


def sniff_image_type(data: bytes) -> str | None:
    """The image type from magic bytes alone (JPEG, PNG, WebP), else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _describe(data: bytes) -> str:
    head = data[:16]
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "a GIF"
    if head[:4] == b"%PDF":
        return "a PDF"
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1", b"ftypheix"):
        return "an AVIF/HEIC file"
    if head[:2] in (b"II", b"MM"):
        return "a TIFF"
    if head[:2] == b"BM":
        return "a BMP"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return "not an image we recognise"


def validate_upload(data: bytes, declared_type: str | None, max_bytes: int) -> str:
    """Cheap checks before anything is stored: size, magic bytes, declared type.

    Returns the canonical content type. Raises :class:`InvalidImage`.
    """
    if not data:
        raise InvalidImage("the file is empty", "empty")
    if len(data) > max_bytes:
        raise InvalidImage(
            f"the file has {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB "
            "(PLANTPIPE_MAX_UPLOAD_BYTES)",
            "too_large",
        )
    sniffed = sniff_image_type(data)
    declared = normalize_content_type(declared_type)
    if sniffed is None:
        raise InvalidImage(
            f"unsupported file type: the content is {_describe(data)}; send JPEG, PNG or WebP",
            "unsupported_type",
        )
    if declared is not None and declared not in ("application/octet-stream",):
        if declared not in SUPPORTED_TYPES:
            raise InvalidImage(
                f"declared type {declared!r} is not supported; send image/jpeg, image/png or "
                "image/webp",
                "unsupported_type",
            )
        if declared != sniffed:
            raise InvalidImage(
                f"declared as {declared} but the content is {sniffed}", "type_mismatch"
            )
    return sniffed


@dataclass(frozen=True)
class DecodedImage:
    rgb: NDArray[np.uint8]
    mime: str
    orig_width: int
    orig_height: int
    exif_orientation: int


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode → 8-bit RGB: CMYK/palette/greyscale converted, alpha composited on white,
    16/32-bit greyscale scaled (not clipped) to 8 bits."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        top = float(arr.max(initial=1.0)) or 1.0
        return Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode, guard against bombs and animations, apply EXIF orientation, return RGB8."""
    mime = sniff_image_type(data)
    if mime is None:
        raise InvalidImage(f"unsupported file type: the content is {_describe(data)}",
                           "unsupported_type")  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImage(
                    f"the image declares {width}×{height} = {width * height / 1e6:.0f} MP; the "
                    f"limit is {max_pixels / 1e6:.0f} MP (decompression bomb guard)",
                    "decompression_bomb",
                )
            if image.format not in _PIL_FORMATS:
                raise InvalidImage(f"unsupported image format {image.format}", "unsupported_type")
            frames = int(getattr(image, "n_frames", 1))
            if frames > 1 and image.format != "MPO":
                raise InvalidImage(
                    f"animated {image.format} with {frames} frames; send a still photo",
                    "animated",
                )
            orientation = int(image.getexif().get(0x0112, 1) or 1)
            image.load()
            oriented = ImageOps.exif_transpose(image) or image
            rgb = np.ascontiguousarray(np.asarray(_to_rgb(oriented), dtype=np.uint8))
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"decompression bomb refused: {exc}", "decompression_bomb") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage("the file claims to be an image but cannot be read", "corrupt") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        code = "truncated" if "truncated" in text.lower() or "premature" in text else "corrupt"
        raise InvalidImage(f"the image data is damaged ({text})", code) from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidImage(f"unexpected pixel layout {rgb.shape}", "corrupt")
    return DecodedImage(
        rgb=rgb,
        mime=mime,
        orig_width=width,
        orig_height=height,
        exif_orientation=orientation,
    )
