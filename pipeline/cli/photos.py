"""The photos a command is given: read and checked (``pipeline.runtime.intake``: size, type,
pixel cap, a full decode) before anything starts."""

from __future__ import annotations

from pathlib import Path

from pipeline.cli.errors import fail
from pipeline.runtime.intake import check_photo
from pipeline.settings import Settings
from pipeline.vision.decode import InvalidImage

CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}


def read_photos(paths: list[Path], settings: Settings) -> tuple[list[bytes], list[str | None]]:
    """Read and check every photo (before any worker starts)."""
    datas: list[bytes] = []
    types: list[str | None] = []
    for path in paths:
        if path.is_dir():
            raise fail(f"{path}: is a directory; pass photo files (JPEG, PNG or WebP)")
        if not path.is_file():
            raise fail(f"{path}: no such file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise fail(f"{path}: cannot read it ({exc.strerror})") from exc
        declared = CONTENT_TYPES.get(path.suffix.lower())
        try:
            check_photo(data, declared, settings)
        except InvalidImage as exc:
            raise fail(f"{path}: {exc.reason}") from exc
        datas.append(data)
        types.append(declared)
    return datas, types
