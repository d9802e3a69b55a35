"""What a photo must pass before it is accepted, in the CLI and in ``client.submit`` alike, so
that no bad photo ever reaches a worker (over HTTP: a 400, not a 202 that fails later).

* the cheap checks of :func:`~pipeline.vision.decode.validate_upload`: not empty, at most
  ``PLANTPIPE_MAX_UPLOAD_BYTES``, JPEG/PNG/WebP magic bytes, the declared type agrees;
* the pixel cap ``PLANTPIPE_MAX_PIXELS`` on the dimensions the header declares, checked before
  any pixel is decoded (a decompression bomb is refused unread);
* a full decode (:func:`~pipeline.vision.decode.decode_preview`, which decodes every byte of
  the compressed data — a JPEG at its smallest DCT scale, so a 12 MP photo costs ~0.1-0.3 s —
  and refuses truncated or damaged data and animations).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pipeline.settings import Settings
from pipeline.vision.decode import InvalidImage, decode_preview, validate_upload

#: Longest side of the picture the full decode check leaves (thrown away at once).
CHECK_SIDE = 64


def check_photo(
    data: bytes, declared_type: str | None, settings: Settings, *, decode: bool = True
) -> str:
    """Every check a photo must pass; returns its canonical MIME type or raises
    :class:`InvalidImage` (``code``: empty, too_large, unsupported_type, type_mismatch,
    decompression_bomb, truncated, corrupt, animated). ``decode=False``: the cheap checks
    only."""
    mime = validate_upload(data, declared_type, settings.max_upload_bytes)
    if decode:
        decode_preview(data, CHECK_SIDE, max_pixels=settings.max_pixels).close()
    return mime


async def check_photos(
    photos: Sequence[bytes],
    declared: Sequence[str | None],
    settings: Settings,
    *,
    decode: bool = True,
) -> list[str]:
    """:func:`check_photo` for each photo, off the event loop (a decode holds the CPU); the
    first refusal raises :class:`InvalidImage` naming the photo by its index."""

    def check_all() -> list[str]:
        mimes = []
        for index, (data, ctype) in enumerate(zip(photos, declared, strict=True)):
            try:
                mimes.append(check_photo(data, ctype, settings, decode=decode))
            except InvalidImage as exc:
                raise InvalidImage(code=exc.code, reason=f"photo {index}: {exc.reason}") from exc
        return mimes

    return await asyncio.to_thread(check_all)
