"""Upload validation and decoding, against a corpus generated here."""

from __future__ import annotations

import io
import pickle
import struct
import zlib

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from pipeline.vision.decode import (
    SUPPORTED_TYPES,
    InvalidImage,
    decode_image,
    normalize_content_type,
    sniff_image_type,
    validate_upload,
)

MIB = 1024 * 1024


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb_image(
    w: int = 64, h: int = 48, colour: tuple[int, int, int] = (200, 30, 30)
) -> Image.Image:
    return Image.new("RGB", (w, h), colour)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(
    width: int, height: int, depth: int, colour_type: int, scanlines: bytes, *, idat: bytes = b""
) -> bytes:
    """A PNG written by hand (lets the test declare any size and bit depth)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat or zlib.compress(scanlines))
        + png_chunk(b"IEND", b"")
    )


def reason_of(exc: pytest.ExceptionInfo[InvalidImage]) -> str:
    assert isinstance(exc.value.reason, str) and len(exc.value.reason) > 15
    return exc.value.reason


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return encode(rgb_image(), "JPEG", quality=90)


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode(rgb_image(), "PNG")


# ---------------------------------------------------------------- cheap validation


def test_supported_types_and_normalisation() -> None:
    assert SUPPORTED_TYPES == {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
    assert normalize_content_type("image/jpg") == "image/jpeg"
    assert normalize_content_type(" Image/JPEG; charset=binary ") == "image/jpeg"
    assert normalize_content_type("IMAGE/PNG") == "image/png"
    assert normalize_content_type("image/gif") == "image/gif"
    assert normalize_content_type("") is None
    assert normalize_content_type(None) is None


def test_sniff(jpeg: bytes, png: bytes) -> None:
    assert sniff_image_type(jpeg) == "image/jpeg"
    assert sniff_image_type(png) == "image/png"
    assert sniff_image_type(encode(rgb_image(), "WEBP")) == "image/webp"
    assert sniff_image_type(encode(rgb_image(), "GIF")) is None
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_image_type(b"\xff\xd8") is None
    assert sniff_image_type(b"") is None


def test_validate_accepts_and_returns_canonical_mime(jpeg: bytes, png: bytes) -> None:
    assert validate_upload(jpeg, None, 20 * MIB) == "image/jpeg"
    assert validate_upload(jpeg, "image/jpg", 20 * MIB) == "image/jpeg"
    assert validate_upload(jpeg, "image/jpeg; q=1", 20 * MIB) == "image/jpeg"
    assert validate_upload(jpeg, "application/octet-stream", 20 * MIB) == "image/jpeg"
    assert validate_upload(png, "image/png", 20 * MIB) == "image/png"
    webp = encode(rgb_image(), "WEBP")
    assert validate_upload(webp, "image/webp", 20 * MIB) == "image/webp"


def test_validate_empty() -> None:
    with pytest.raises(InvalidImage) as exc:
        validate_upload(b"", "image/jpeg", 20 * MIB)
    assert exc.value.code == "empty"
    assert "empty" in reason_of(exc)


def test_validate_too_large(jpeg: bytes) -> None:
    with pytest.raises(InvalidImage) as exc:
        validate_upload(jpeg, "image/jpeg", len(jpeg) - 1)
    assert exc.value.code == "too_large"
    assert str(len(jpeg) - 1) in reason_of(exc)
    assert validate_upload(jpeg, "image/jpeg", len(jpeg)) == "image/jpeg"


def test_validate_text_named_jpg() -> None:
    with pytest.raises(InvalidImage) as exc:
        validate_upload(b"this is not a photo, honest\n" * 4, "image/jpeg", 20 * MIB)
    assert exc.value.code == "unsupported_type"
    assert "text" in reason_of(exc)


def test_validate_gif_says_what_it_is() -> None:
    with pytest.raises(InvalidImage) as exc:
        validate_upload(encode(rgb_image(), "GIF"), "image/gif", 20 * MIB)
    assert exc.value.code == "unsupported_type"
    assert "GIF" in reason_of(exc)


def test_validate_declared_type_mismatch(png: bytes, jpeg: bytes) -> None:
    with pytest.raises(InvalidImage) as exc:
        validate_upload(png, "image/jpeg", 20 * MIB)
    assert exc.value.code == "type_mismatch"
    assert "image/png" in reason_of(exc) and "image/jpeg" in exc.value.reason
    with pytest.raises(InvalidImage) as exc2:
        validate_upload(jpeg, "text/plain", 20 * MIB)
    assert exc2.value.code == "type_mismatch"


def test_validate_does_not_decode(jpeg: bytes) -> None:
    # cheap: a truncated JPEG passes validation; decode_image refuses it
    assert validate_upload(jpeg[: len(jpeg) // 2], "image/jpeg", 20 * MIB) == "image/jpeg"


def test_invalid_image_is_a_picklable_value_error() -> None:
    err = InvalidImage(code="animated", reason="the file is animated; send a still photo")
    assert isinstance(err, ValueError)
    assert str(err) == "the file is animated; send a still photo"
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, InvalidImage)
    assert (back.code, back.reason) == ("animated", "the file is animated; send a still photo")


# -------------------------------------------------------------------------- decoding


def decode_error(data: bytes, **kw: int) -> InvalidImage:
    with pytest.raises(InvalidImage) as exc:
        decode_image(data, **kw)
    reason_of(exc)
    return exc.value


def test_decode_plain_formats(jpeg: bytes, png: bytes) -> None:
    for data, mime in ((jpeg, "image/jpeg"), (png, "image/png")):
        out = decode_image(data)
        assert out.mime == mime
        assert out.rgb.shape == (48, 64, 3) and out.rgb.dtype == np.uint8
        assert out.rgb.flags.c_contiguous
        assert (out.orig_width, out.orig_height, out.exif_orientation) == (64, 48, 1)
        assert np.abs(out.rgb.astype(int) - (200, 30, 30)).max() <= 6
    webp = decode_image(encode(rgb_image(), "WEBP", lossless=True))
    assert webp.mime == "image/webp" and webp.rgb[0, 0].tolist() == [200, 30, 30]


def test_decode_empty_and_garbage() -> None:
    assert decode_error(b"").code == "empty"
    assert decode_error(b"definitely not an image").code == "unsupported_type"


def test_decode_truncated_jpeg(jpeg: bytes) -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noisy), "JPEG", quality=90)
    err = decode_error(data[: len(data) // 2])
    assert err.code == "truncated"
    assert "truncated" in err.reason


def test_decode_truncated_png() -> None:
    noisy = np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noisy), "PNG")
    assert decode_error(data[: len(data) // 2]).code == "truncated"


def test_png_bomb_with_huge_declared_size() -> None:
    # 100 000 × 100 000 declared, a few bytes of data: refused on the header.
    bomb = raw_png(100_000, 100_000, 8, 2, b"\x00" * 16)
    assert len(bomb) < 200
    err = decode_error(bomb)
    assert err.code == "decompression_bomb"


def test_declared_size_is_checked_against_max_pixels_before_decoding() -> None:
    # 2000 × 2000 declared, garbage pixel data: decoding it would fail differently.
    data = raw_png(2000, 2000, 8, 2, b"", idat=b"not a zlib stream at all")
    err = decode_error(data, max_pixels=1_000_000)
    assert err.code == "decompression_bomb"
    assert "2000" in err.reason and "1000000" in err.reason
    # within the default limit the data is decoded, and found damaged
    assert decode_error(data).code in ("corrupt", "truncated")


def test_16_bit_grey_png_is_scaled_not_truncated() -> None:
    values = (0, 1000, 32896, 65535)
    data = raw_png(4, 1, 16, 0, b"\x00" + b"".join(struct.pack(">H", v) for v in values))
    out = decode_image(data)
    assert out.rgb.shape == (1, 4, 3)
    # round(v · 255 / 65535): 1000 → 4 (truncating to the high byte would give 3)
    assert out.rgb[0, :, 0].tolist() == [0, 4, 128, 255]
    assert (out.rgb[..., 0] == out.rgb[..., 1]).all() and (out.rgb[..., 1] == out.rgb[..., 2]).all()


def test_16_bit_rgb_png() -> None:
    pixels = [(65535, 0, 32896), (0, 65535, 0)]
    data = raw_png(2, 1, 16, 2, b"\x00" + b"".join(struct.pack(">HHH", *p) for p in pixels))
    out = decode_image(data)
    assert out.rgb.dtype == np.uint8
    assert np.abs(out.rgb[0].astype(int) - [[255, 0, 128], [0, 255, 0]]).max() <= 1


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(rgb_image(colour=(200, 30, 30)).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    assert out.rgb.shape == (48, 64, 3)
    assert np.abs(out.rgb[24, 32].astype(int) - (200, 30, 30)).max() <= 8


def test_greyscale_and_palette() -> None:
    grey = decode_image(encode(Image.new("L", (10, 6), 77), "PNG"))
    assert grey.rgb.shape == (6, 10, 3) and grey.rgb.reshape(-1).tolist() == [77] * 180
    grey_jpeg = decode_image(encode(Image.new("L", (16, 16), 140), "JPEG"))
    assert abs(int(grey_jpeg.rgb[8, 8, 0]) - 140) <= 2 and grey_jpeg.rgb.shape == (16, 16, 3)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 120, 240])
    pal = decode_image(encode(palette, "PNG"))
    assert pal.rgb[0, 0].tolist() == [10, 120, 240]


def test_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red …
    rgba[0, 0, 3] = 0  # … fully transparent
    rgba[0, 1, 3] = 128  # … half
    rgba[0, 2, 3] = 255  # … opaque
    out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG")).rgb
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [255, 127, 127]
    assert out[0, 2].tolist() == [255, 0, 0]
    la = Image.fromarray(
        np.stack([np.full((2, 2), 0, np.uint8), np.zeros((2, 2), np.uint8)], -1), "LA"
    )
    assert decode_image(encode(la, "PNG")).rgb[0, 0].tolist() == [255, 255, 255]
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0])
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 0
    out_p = decode_image(encode(pal, "PNG", transparency=0)).rgb
    assert out_p[0, 0].tolist() == [255, 255, 255] and out_p[1, 1].tolist() == [0, 255, 0]


def _frames() -> list[Image.Image]:
    return [rgb_image(20, 20, (255, 0, 0)), rgb_image(20, 20, (0, 0, 255))]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_are_refused(fmt: str) -> None:
    first, *rest = _frames()
    data = encode(first, fmt, save_all=True, append_images=rest)
    err = decode_error(data)
    assert err.code == "animated"
    assert "2 frames" in err.reason


def test_still_gif_is_unsupported() -> None:
    assert decode_error(encode(rgb_image(), "GIF")).code == "unsupported_type"


def test_multi_picture_jpeg_uses_the_first_picture() -> None:
    first, *rest = _frames()
    data = encode(first, "MPO", save_all=True, append_images=rest)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    out = decode_image(data)
    assert out.mime == "image/jpeg" and out.rgb.shape == (20, 20, 3)
    assert out.rgb[10, 10, 0] > 200 and out.rgb[10, 10, 2] < 50


def _oriented_jpeg(orientation: int) -> bytes:
    # 40 wide × 20 high: left half red, right half blue
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    image = Image.fromarray(arr)
    exif = image.getexif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_rotation_swaps_dimensions() -> None:
    out = decode_image(_oriented_jpeg(6))  # "rotate 90° clockwise to display"
    assert (out.orig_width, out.orig_height, out.exif_orientation) == (40, 20, 6)
    assert out.rgb.shape == (40, 20, 3)  # now 20 wide × 40 high
    top, bottom = out.rgb[:20].reshape(-1, 3).mean(0), out.rgb[20:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_orientation_3_and_1() -> None:
    flipped = decode_image(_oriented_jpeg(3))  # 180°: red now on the right
    assert flipped.rgb.shape == (20, 40, 3) and flipped.exif_orientation == 3
    assert flipped.rgb[10, 35, 0] > 200 and flipped.rgb[10, 5, 2] > 200
    upright = decode_image(_oriented_jpeg(1))
    assert upright.rgb[10, 5, 0] > 200 and upright.exif_orientation == 1


def _assert_rgb(a: NDArray[np.uint8]) -> None:
    assert a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8


def test_every_mode_decodes_to_rgb8() -> None:
    for mode in ("1", "L", "P", "RGB", "RGBA", "LA", "I;16"):
        image = (
            rgb_image(12, 10).convert(mode) if mode != "I;16" else Image.new(mode, (12, 10), 300)
        )
        _assert_rgb(decode_image(encode(image, "PNG")).rgb)
    for mode in ("L", "RGB", "CMYK"):
        _assert_rgb(decode_image(encode(rgb_image(12, 10).convert(mode), "JPEG")).rgb)


def test_high_bit_depth_and_float_modes_are_scaled() -> None:
    from pipeline.vision.pixels import to_rgb_array

    wide = Image.fromarray(np.asarray([[0, 257, 65535, 70000]], dtype=np.int32), "I")
    assert to_rgb_array(wide)[0, :, 0].tolist() == [0, 1, 255, 255]
    floats = Image.fromarray(np.asarray([[-5.0, 0.4, 127.6, 300.0]], dtype=np.float32), "F")
    assert to_rgb_array(floats)[0, :, 0].tolist() == [0, 0, 128, 255]


def test_decode_preview_uses_a_reduced_jpeg_scale_and_orientation() -> None:
    import io as _io

    from PIL import Image as _Image

    from pipeline.vision.decode import decode_preview

    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[:, :200] = (200, 20, 20)
    buf = _io.BytesIO()
    exif = _Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show upright
    _Image.fromarray(rgb).save(buf, format="JPEG", quality=95, exif=exif)
    small = decode_preview(buf.getvalue(), 100)
    assert small.mode == "RGB" and small.size == (75, 100)  # upright: portrait
    px = np.asarray(small)
    assert px[5, 37, 0] > 150 and px[95, 37, 0] < 80  # the red half is now on top
    full = decode_preview(buf.getvalue(), None)
    assert full.size == (300, 400)
    png = _io.BytesIO()
    _Image.fromarray(rgb).save(png, format="PNG")
    assert decode_preview(png.getvalue(), 200).size == (200, 150)
