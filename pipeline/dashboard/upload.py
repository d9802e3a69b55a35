"""Photos dropped on the upload page become a session: ``POST /api/sessions`` (multipart:
``photos`` files, optional ``metadata`` as a JSON object), checked as ``client.submit``
checks them (it does the checking), with the photos' file names kept in the metadata."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from pipeline.client import PipelineClient
from pipeline.runtime.metadata import clean_metadata, photo_names_metadata

MAX_PHOTOS = 50
MAX_BODY_BYTES = 256 * 1024 * 1024


class UploadRefused(ValueError):
    """The request is not an acceptable upload (``status``: 400, 411 or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def body_limit(client: PipelineClient) -> int:
    return min(MAX_BODY_BYTES, MAX_PHOTOS * client.settings.max_upload_bytes + 1024 * 1024)


def clean_name(name: str) -> str:
    """A file name as shown (never used for a key): no control characters, ≤ 120 chars."""
    kept = "".join(c for c in name if ord(c) >= 32 and ord(c) != 127).strip()
    return kept[:120] or "photo"


def parse_metadata(raw: str) -> dict[str, str]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UploadRefused(f"metadata must be a JSON object of strings: {exc}") from exc
    if not isinstance(value, dict):
        raise UploadRefused("metadata must be a JSON object of strings")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


async def submit_upload(request: Request, client: PipelineClient) -> tuple[str, list[str]]:
    """Read the upload, submit it; returns the session id and the file names."""
    length = request.headers.get("content-length")
    if length is None:
        raise UploadRefused("send the photos with a Content-Length (a multipart form)", 411)
    limit = body_limit(client)
    if int(length) > limit:
        raise UploadRefused(
            f"upload of {int(length) / 2**20:.0f} MiB is over the limit of "
            f"{limit / 2**20:.0f} MiB: send fewer photos at once",
            413,
        )
    try:
        form = await request.form(max_files=MAX_PHOTOS, max_fields=20)
    except Exception as exc:  # MultiPartException and friends: a malformed or oversized form
        raise UploadRefused(f"could not read the upload: {exc}") from exc
    try:
        files = [f for f in form.getlist("photos") if isinstance(f, UploadFile)]
        if not files:
            raise UploadRefused("no photos: send one or more files in the 'photos' field")
        raw_meta = form.get("metadata")
        metadata = parse_metadata(raw_meta if isinstance(raw_meta, str) else "")
        names = [clean_name(f.filename or f"photo {i + 1}") for i, f in enumerate(files)]
        metadata.setdefault("source", "dashboard")
        metadata = photo_names_metadata(names) | metadata  # the user's entries win
        try:
            metadata = clean_metadata(metadata)
        except ValueError as exc:
            raise UploadRefused(str(exc)) from exc
        datas: list[bytes] = []
        types: list[str | None] = []
        for f in files:
            datas.append(await f.read())
            types.append(_declared(f))
    finally:
        await form.close()
    try:
        session_id = await client.submit(datas, metadata, content_types=types)
    except ValueError as exc:  # InvalidImage: which photo, and why
        reason = str(getattr(exc, "reason", "") or exc)
        raise UploadRefused(_named(reason, names)) from exc
    return session_id, names


def _declared(upload: UploadFile) -> str | None:
    """The declared type, unless the browser only said it does not know."""
    ctype: Any = upload.content_type
    return None if not ctype or ctype == "application/octet-stream" else str(ctype)


def _named(reason: str, names: list[str]) -> str:
    """``photo 2: …`` (client.submit's words) with the file's name."""
    head, sep, rest = reason.partition(":")
    if sep and head.startswith("photo ") and head[6:].isdigit():
        index = int(head[6:])
        if index < len(names):
            return f"{names[index]}: {rest.strip()}"
    return reason
