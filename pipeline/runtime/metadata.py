"""What metadata a client may attach: to a session (stored and echoed) and to an uploaded
object (S3 object metadata). Never used to build keys."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.schemas import UploadItem
from pipeline.storage.base import check_key

MAX_METADATA_ITEMS = 64
MAX_METADATA_CHARS = 1024


def clean_metadata(metadata: dict[str, str] | None, *, ascii_only: bool = False) -> dict[str, str]:
    """Metadata is stored and echoed, never used to build keys: bound its size, refuse
    control characters (header injection) and, for S3 object metadata, non-ASCII."""
    items = dict(metadata or {})
    if len(items) > MAX_METADATA_ITEMS:
        raise ValueError(f"metadata has {len(items)} entries; at most {MAX_METADATA_ITEMS}")
    out: dict[str, str] = {}
    for k, v in items.items():
        key, value = str(k), str(v)
        if not key or len(key) > 128 or len(value) > MAX_METADATA_CHARS:
            raise ValueError(
                f"metadata entry {key[:40]!r}: keys 1..128 chars, values ≤ {MAX_METADATA_CHARS}"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in key + value):
            raise ValueError(f"metadata entry {key[:40]!r} holds control characters")
        if ascii_only and not (key + value).isascii():
            raise ValueError(f"S3 object metadata {key[:40]!r} must be ASCII")
        out[key] = value
    return out


#: A session records its photos' file names in its metadata, one entry per photo ("photo.0":
#: name, …), up to this many photos (shown by status, watch and the dashboard, kept in
#: results.json).
NAMED_PHOTOS_MAX = 48
PHOTO_NAME = "photo.{}"


def photo_names_metadata(names: list[str]) -> dict[str, str]:
    """The photos' file names as session metadata; none for more than ``NAMED_PHOTOS_MAX``."""
    if len(names) > NAMED_PHOTOS_MAX:
        return {}
    return {PHOTO_NAME.format(i): name[:200] for i, name in enumerate(names)}


def photo_names(metadata: Mapping[str, str]) -> list[str]:
    """The file names :func:`photo_names_metadata` recorded, in photo order (none: [])."""
    names: list[str] = []
    while (name := metadata.get(PHOTO_NAME.format(len(names)))) is not None:
        names.append(name)
    return names


def is_photo_name(key: str) -> bool:
    """Whether a metadata key is one of the photos' file names."""
    head, _, index = key.partition(".")
    return head == "photo" and index.isdigit()


def upload_metadata(item: UploadItem) -> dict[str, str]:
    """An upload's key checked and its S3 object metadata cleaned (ASCII, ≤ 2 KiB)."""
    check_key(item.key)
    meta = clean_metadata(item.metadata, ascii_only=True)
    if sum(len(k) + len(v) for k, v in meta.items()) > 2000:
        raise ValueError("S3 object metadata is limited to 2 KiB")
    return meta
