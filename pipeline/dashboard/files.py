"""A session's files for the browser, straight from the object store (never through Redis).

``/files/{session}/{index}/{name}`` (``name``: original, thumbnail_original, processed,
thumbnail_processed) and ``/files/{session}/results.json``. The object key is never built
from the URL: the route looks the artifact up in the session's record (``artkey:…``, written
by the server from its own ids) and serves it only once it is uploaded. S3: a redirect to a
presigned GET URL (reused for a while, so the browser's cache works); a local store: the
file itself, resolved inside the store's folder.
"""

from __future__ import annotations

import mimetypes
import re
import time
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import NoCredentialsError
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings
from pipeline.state.keys import Keys
from pipeline.state.redisio import text, typed
from pipeline.storage.local import LocalObjectStore
from pipeline.storage.s3 import S3ObjectStore
from pipeline.vision.outputs import PHOTO_OUTPUTS

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PRESIGN_S = 900
REUSE_S = 600  # a presigned URL is handed out again for this long (browser cache hits)
TYPES = {".webp": "image/webp", ".json": "application/json"}  # besides the outputs'


def valid_session_id(value: str) -> bool:
    return bool(SESSION_ID.match(value))


def artifact_of(session_id: str, index: int | None, name: str) -> str | None:
    """The artifact id a file route names, or None for a name that is not a file."""
    if index is None:
        return f"{session_id}:results" if name == "results.json" else None
    return f"{session_id}:{index}:{name}" if name in PHOTO_OUTPUTS and index >= 0 else None


def _not_found(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=404)


class FileSource:
    """The object store, read for the browser: S3 (presigned redirects) or a local folder."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._keys = Keys.from_settings(settings)
        self._s3 = S3ObjectStore(settings) if settings.uses_s3 else None
        self._local = None if settings.uses_s3 else LocalObjectStore(settings.storage)
        self._urls: dict[str, tuple[float, str]] = {}
        self.origins: list[str] = []

    @property
    def description(self) -> str:
        store: Any = self._s3 or self._local
        return str(store.description)

    async def start(self) -> None:
        if self._s3 is not None:
            await self._s3.open()  # presigning needs no request to S3
            try:
                sample = await self._s3.presign_get("plantpipe-origin-probe", 60)
            except NoCredentialsError as exc:
                raise ConfigurationError(
                    "no AWS credentials to sign the S3 image links with: set "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or point "
                    "PLANTPIPE_STORAGE at the local output folder",
                    code="no_credentials",
                ) from exc
            parts = urlsplit(sample)
            self.origins = [f"{parts.scheme}://{parts.netloc}"]

    async def close(self) -> None:
        if self._s3 is not None:
            await self._s3.close()

    async def locate(self, redis: Redis, session_id: str, artifact_id: str) -> tuple[str, str]:
        """``(state, key)`` of a session's artifact (``("", "")`` when it has none)."""
        session = self._keys.session(session_id)
        state, key = await typed(redis).hmget(
            session, f"art:{artifact_id}", f"artkey:{artifact_id}"
        )
        return (text(state) if state else "", text(key) if key else "")

    async def response(self, request: Request, redis: Redis) -> Response:
        session_id = request.path_params["session_id"]
        index = request.path_params.get("index")
        name = request.path_params["name"]
        artifact = artifact_of(session_id, index, name) if valid_session_id(session_id) else None
        if artifact is None:
            names = "|".join(PHOTO_OUTPUTS.names())
            return _not_found(
                f"no such file: /files/{{session}}/{{photo}}/{{{names}}} or "
                "/files/{session}/results.json"
            )
        state, key = await self.locate(redis, session_id, artifact)
        if not key:
            return _not_found(f"session {session_id} has no {name} file (yet)")
        if state != "uploaded":
            return _not_found(f"{key} is not in the store: its upload is {state or 'unknown'}")
        if self._s3 is not None:
            return RedirectResponse(
                await self._presigned(key),
                status_code=302,
                headers={"Cache-Control": "private, max-age=300"},
            )
        assert self._local is not None
        try:
            path = self._local.path(key)
        except Exception:  # a key that leaves the folder: never served
            return _not_found(f"{key} is outside the store")
        if not path.is_file():
            return _not_found(f"{key} is missing from {self._local.root}")
        suffix = path.suffix.lower()
        media = (
            PHOTO_OUTPUTS.content_types().get(suffix)
            or TYPES.get(suffix)
            or mimetypes.guess_type(path.name)[0]
            or "application/octet-stream"
        )
        return FileResponse(
            path, media_type=media, headers={"Cache-Control": "private, max-age=3600"}
        )

    async def _presigned(self, key: str) -> str:
        assert self._s3 is not None
        now = time.monotonic()
        expires = min(PRESIGN_S, self._settings.presign_max_expiry_s)
        cached = self._urls.get(key)
        if cached is not None and now - cached[0] < min(REUSE_S, expires / 2):
            return cached[1]
        url = await self._s3.presign_get(key, expires)
        if len(self._urls) > 10_000:
            self._urls.clear()
        self._urls[key] = (now, url)
        return url
