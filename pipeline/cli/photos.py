"""The photos a command is given: read and cheaply validated before anything starts."""

from __future__ import annotations

from pathlib import Path

from pipeline.cli.errors import fail
from pipeline.vision.decode import InvalidImage, validate_upload

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                 ".webp": "image/webp"}  # fmt: skip


def read_photos(paths: list[Path], max_bytes: int) -> tuple[list[bytes], list[str | None]]:
    """Read and cheaply validate every photo (before any worker starts)."""
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
            validate_upload(data, declared, max_bytes)
        except InvalidImage as exc:
            raise fail(f"{path}: {exc.reason}") from exc
        datas.append(data)
        types.append(declared)
    return datas, types
