"""Photo checks before any worker starts (pipeline.runtime.intake): truncation by a full
decode, the pixel cap PLANTPIPE_MAX_PIXELS on the declared size, decompression bombs."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.runtime.intake import check_photo, check_photos
from pipeline.settings import Settings
from pipeline.vision.decode import InvalidImage


def jpeg(width: int = 640, height: int = 480) -> bytes:
    rng = np.random.default_rng(0)
    rgb = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a baseline JPEG) with its SOF0 header patched to declare width × height."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def png_declaring(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + idat + png_chunk(b"IEND", b"")


def refused(data: bytes, settings: Settings | None = None) -> InvalidImage:
    with pytest.raises(InvalidImage) as info:
        check_photo(data, None, settings or Settings())
    return info.value


def test_a_good_photo_passes_and_keeps_its_type() -> None:
    assert check_photo(jpeg(), "image/jpg", Settings()) == "image/jpeg"


def test_a_truncated_jpeg_is_refused_by_the_full_decode() -> None:
    data = jpeg()
    for cut in (len(data) // 2, len(data) - 200):
        assert refused(data[:cut]).code == "truncated"
    # the cheap checks alone let it through (what decode=False keeps)
    assert check_photo(data[: len(data) // 2], None, Settings(), decode=False) == "image/jpeg"


def test_a_png_declaring_60000_by_60000_is_a_bomb_refused_unread() -> None:
    started = time.monotonic()
    error = refused(png_declaring(60_000, 60_000))
    assert error.code == "decompression_bomb"
    assert "3600000000 pixels" in error.reason
    assert time.monotonic() - started < 60  # decoding 3.6 G pixels would take far longer


def test_the_pixel_cap_is_the_setting_12000_by_9000_is_over_the_default() -> None:
    big = declaring(jpeg(), 12_000, 9_000)
    error = refused(big)
    assert error.code == "decompression_bomb" and "108000000 pixels" in error.reason
    small_cap = Settings(max_pixels=640 * 480 - 1)
    assert refused(jpeg(), small_cap).code == "decompression_bomb"
    assert check_photo(jpeg(), None, Settings(max_pixels=640 * 480)) == "image/jpeg"


async def test_check_photos_names_the_photo_and_runs_off_the_event_loop() -> None:
    data = jpeg()
    assert await check_photos([data, data], [None, "image/jpeg"], Settings()) == ["image/jpeg"] * 2
    with pytest.raises(InvalidImage) as info:
        await check_photos([data, data[:-300]], [None, None], Settings())
    assert info.value.code == "truncated" and info.value.reason.startswith("photo 1: ")
