"""Validation and decoding of uploaded photos (pure: bytes in, arrays out).

Two levels:

* :func:`validate_upload` is cheap (magic bytes, size, declared type) and runs in the client
  before anything is stored.
* :func:`decode_image` fully decodes with Pillow, guards against decompression bombs,
  rejects animations, applies the EXIF orientation and always returns ``(H, W, 3) uint8`` RGB.

Every rejection raises :class:`InvalidImage` with a short machine ``code`` and a ``reason``
sentence meant for the person who sent the photo.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.vision.pixels import plain_rgb_mode, to_rgb_array

__all__ = [
    "SUPPORTED_TYPES",
    "DecodedImage",
    "InvalidImage",
    "decode_image",
    "decode_preview",
    "normalize_content_type",
    "sniff_image_type",
    "validate_upload",
]

#: Accepted MIME types and the canonical file extension of each.
SUPPORTED_TYPES: dict[str, str] = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
}

_ALIASES: dict[str, str] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-webp": "image/webp",
}

# Declared types that say nothing about the content; treated like "not declared".
_GENERIC_TYPES = frozenset(
    {"application/octet-stream", "binary/octet-stream", "application/binary"}
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow format name -> our MIME type. MPO is a multi-picture JPEG (phones, 3D cameras).
_FORMAT_MIME: dict[str, str] = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
}
# GIF is opened only to tell an animation apart from a plain unsupported file.
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # JPEG opens MPO files too

_ACCEPTED = "JPEG, PNG or WebP"


class InvalidImage(ValueError):
    """The bytes are not an acceptable photo. Never worth retrying.

    ``code`` is a short machine code (``empty``, ``too_large``, ``unsupported_type``,
    ``type_mismatch``, ``truncated``, ``corrupt``, ``decompression_bomb``, ``animated``);
    ``reason`` says what is wrong and what to do about it.
    """

    def __init__(self, reason: str, code: str = "invalid_image") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses process pools: rebuild from the attributes, not from ``args``.
        return (type(self), (self.reason, self.code))

    def __str__(self) -> str:
        return self.reason


def normalize_content_type(ct: str | None) -> str | None:
    """``"Image/JPG; charset=x"`` -> ``"image/jpeg"``; ``None``/blank -> ``None``.

    Parameters are stripped, the type is lowercased and known aliases are mapped
    (``image/jpg`` and ``image/pjpeg`` are JPEG). Unknown types are returned normalised,
    not rejected: deciding is :func:`validate_upload`'s job.
    """
    if ct is None:
        return None
    base = ct.split(";", 1)[0].strip().lower()
    if not base:
        return None
    return _ALIASES.get(base, base)


def sniff_image_type(data: bytes) -> str | None:
    """The supported MIME type the magic bytes announce, or ``None``."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == _PNG_SIGNATURE:
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _describe_unknown(data: bytes) -> str:
    """A best guess of what unsupported bytes are, for the error message."""
    head = data[:32]
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "a GIF image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "an AVIF image"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "a HEIC/HEIF image"
        return "an ISO media (MP4/MOV/HEIF) file"
    if head[:2] == b"BM":
        return "a BMP image"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "a TIFF image"
    if head[:5] == b"%PDF-":
        return "a PDF document"
    if head[:4] == b"RIFF":
        return "a RIFF file that is not WebP"
    try:
        text = data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "an unknown binary format"
    if text.lstrip().startswith("<"):
        return "text (HTML/XML/SVG)"
    return "text"


def validate_upload(data: bytes, declared_type: str | None, max_bytes: int) -> str:
    """Cheap checks before a photo is accepted; returns its canonical MIME type.

    Checks, in order: not empty, at most ``max_bytes``, magic bytes of JPEG/PNG/WebP, and the
    declared content type (when given and not generic such as ``application/octet-stream``)
    agrees with the magic bytes. Nothing is decoded: a file that passes may still fail
    :func:`decode_image` (truncated, bomb, animated).
    """
    size = len(data)
    if size == 0:
        raise InvalidImage(
            code="empty", reason=f"the file is empty (0 bytes); send a {_ACCEPTED} photo"
        )
    if size > max_bytes:
        raise InvalidImage(
            code="too_large",
            reason=f"the file is {size / 1048576:.1f} MiB ({size} bytes), over the limit of "
            f"{max_bytes} bytes; resize or recompress the photo",
        )
    sniffed = sniff_image_type(data)
    if sniffed is None:
        raise InvalidImage(
            code="unsupported_type",
            reason=f"the content is {_describe_unknown(data)}, not a {_ACCEPTED} image; "
            f"convert the photo to {_ACCEPTED}",
        )
    declared = normalize_content_type(declared_type)
    if declared is not None and declared not in _GENERIC_TYPES and declared != sniffed:
        raise InvalidImage(
            code="type_mismatch",
            reason=f"the declared content type {declared!r} does not match the content, which is "
            f"{sniffed}; send the right content type (or none)",
        )
    return sniffed


@dataclass(frozen=True)
class DecodedImage:
    """A decoded photo.

    ``rgb`` is ``(H, W, 3) uint8`` *after* the EXIF orientation was applied;
    ``orig_width``/``orig_height`` are the dimensions stored in the file (before it), and
    ``exif_orientation`` the EXIF tag value found (1 = none/upright).
    """

    rgb: NDArray[np.uint8]
    mime: str
    orig_width: int
    orig_height: int
    exif_orientation: int

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def _bomb(width: int, height: int, max_pixels: int) -> InvalidImage:
    return InvalidImage(
        code="decompression_bomb",
        reason=f"the image declares {width}×{height} = {width * height} pixels, more than the "
        f"{max_pixels} allowed; send a smaller photo",
    )


def _open(data: bytes) -> Image.Image:
    Image.init()  # register every plugin: `formats=` needs MPO & co. in a fresh process
    # Pillow warns above Image.MAX_IMAGE_PIXELS and refuses above twice that; our own
    # ``max_pixels`` check follows the open. (No warnings.catch_warnings: not thread-safe.)
    try:
        return Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError as exc:
        raise InvalidImage(
            code="decompression_bomb",
            reason=f"the image declares far too many pixels ({exc}); send a smaller photo",
        ) from exc
    except UnidentifiedImageError as exc:
        sniffed = sniff_image_type(data)
        if sniffed is not None:
            raise InvalidImage(
                code="corrupt",
                reason=f"the file starts like {sniffed} but its header cannot be read; "
                "re-export or re-upload the photo",
            ) from exc
        raise InvalidImage(
            code="unsupported_type",
            reason=f"the content is {_describe_unknown(data)}, not a {_ACCEPTED} image; "
            f"convert the photo to {_ACCEPTED}",
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _read_error(exc) from exc


def _read_error(exc: BaseException) -> InvalidImage:
    text = str(exc)
    if isinstance(exc, EOFError) or "truncated" in text.lower():
        return InvalidImage(
            code="truncated",
            reason="the image data ends early (the file is truncated); upload the complete file",
        )
    return InvalidImage(
        code="corrupt",
        reason=f"the image data is damaged and cannot be decoded ({type(exc).__name__}: {text}); "
        "re-export or re-upload the photo",
    )


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF: treat as upright
        return 1
    try:
        orientation = int(value)
    except (TypeError, ValueError):
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _decode_upright(
    data: bytes, max_pixels: int, max_side: int | None
) -> tuple[Image.Image, str, int, int, int]:
    """``(upright image, mime, stored width, stored height, EXIF orientation)``; the image
    is loaded (the file closed). ``max_side`` lets a JPEG decode at a reduced DCT scale
    (draft) no smaller than needed for that longest side; the caller resizes the rest."""
    if not data:
        raise InvalidImage(
            code="empty", reason=f"the file is empty (0 bytes); send a {_ACCEPTED} photo"
        )
    im = _open(data)
    try:
        fmt = im.format or ""
        width, height = im.size
        if width <= 0 or height <= 0:
            raise InvalidImage(
                code="corrupt", reason=f"the image declares an empty size {width}×{height}"
            )
        if width * height > max_pixels:
            raise _bomb(width, height, max_pixels)
        if fmt != "MPO" and getattr(im, "is_animated", False):
            name = {"PNG": "APNG", "WEBP": "WebP", "GIF": "GIF"}.get(fmt, fmt)
            raise InvalidImage(
                code="animated",
                reason=f"the file is an animated {name} with {getattr(im, 'n_frames', 'several')} "
                "frames; send a single still photo",
            )
        mime = _FORMAT_MIME.get(fmt)
        if mime is None:
            raise InvalidImage(
                code="unsupported_type",
                reason=f"the content is a {fmt or 'unknown'} image, not {_ACCEPTED}; "
                f"convert the photo to {_ACCEPTED}",
            )
        if max_side is not None and mime == "image/jpeg" and max(width, height) > max_side:
            scale = max_side / max(width, height)
            im.draft("RGB", (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
        try:
            im.load()
        except InvalidImage:
            raise
        except Image.DecompressionBombError as exc:
            raise _bomb(width, height, max_pixels) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _read_error(exc) from exc
        orientation = _orientation(im)
        upright: Image.Image = im
        if orientation != 1:
            try:
                upright = ImageOps.exif_transpose(im)
            except Exception:  # a broken EXIF block must not lose the photo
                upright = im
            if upright is not im:
                im.close()
    except BaseException:
        im.close()
        raise
    return upright, mime, int(width), int(height), orientation


def decode_image(data: bytes, *, max_pixels: int = 100_000_000) -> DecodedImage:
    """Decode JPEG/PNG/WebP bytes to upright RGB ``uint8``.

    The declared dimensions are checked against ``max_pixels`` before any pixel is
    decoded (Pillow also refuses on its own anything above twice ``Image.MAX_IMAGE_PIXELS``).
    Animated GIF/WebP/APNG are refused; a multi-picture JPEG (MPO) uses its first picture.
    """
    upright, mime, width, height, orientation = _decode_upright(data, max_pixels, None)
    try:
        rgb = to_rgb_array(upright)
    finally:
        upright.close()
    return DecodedImage(
        rgb=rgb, mime=mime, orig_width=width, orig_height=height, exif_orientation=orientation
    )


def decode_preview(
    data: bytes, max_side: int | None, *, max_pixels: int = 100_000_000
) -> Image.Image:
    """The upright photo as an RGB Pillow image whose longest side is at most ``max_side``
    (``None``: full size), for pictures drawn from it (the visualization).

    Same checks as :func:`decode_image`. A JPEG is decoded at the smallest DCT scale (1/2,
    1/4, 1/8) that still covers ``max_side``, so a 12 MP photo shown at 2000 px never has
    all its pixels decoded; what is left is resized with a box/bilinear reduction.
    """
    upright, _, _, _, _ = _decode_upright(data, max_pixels, max_side)
    if plain_rgb_mode(upright):
        image = upright if upright.mode == "RGB" else upright.convert("RGB")
    else:
        image = Image.fromarray(to_rgb_array(upright))
    if image is not upright:
        upright.close()
    if max_side is not None and max(image.size) > max_side:
        w, h = image.size
        scale = max_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        resized = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        image.close()
        image = resized
    return image
