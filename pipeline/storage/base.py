"""The object store contract every backend implements."""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from pipeline.errors import PermanentError

_KEY_OK = re.compile(r"^[A-Za-z0-9!_.*'()/=+-]+$")


class ObjectInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    size: int
    content_type: str
    etag: str | None = None
    metadata: dict[str, str] = {}
    sha256: str | None = None  # of the bytes, as recorded when they were stored (None: unknown)


class PutResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    size: int
    etag: str | None
    sha256: str
    multipart: bool = False


class InvalidKey(PermanentError):
    code = "invalid_key"


def check_key(key: str) -> str:
    """Refuse keys that could escape a prefix or a directory: '..', leading '/', odd bytes."""
    if not key or len(key) > 1024:
        raise InvalidKey(f"object key must be 1..1024 characters, got {len(key)}")
    if key.startswith("/") or "//" in key:
        raise InvalidKey(f"object key {key!r} must not start with '/' or contain '//'")
    parts = key.split("/")
    if ".." in parts or "." in parts:
        raise InvalidKey(f"object key {key!r} must not contain '.' or '..' segments")
    if not _KEY_OK.match(key):
        raise InvalidKey(f"object key {key!r} has characters outside [A-Za-z0-9!_.*'()/=+-]")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """Where artifacts end up: S3 (or compatible) or a local directory."""

    description: str

    async def start(self) -> None:
        """Open clients; check the bucket/directory (create it when configured)."""

    async def close(self) -> None: ...

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        sha256: str | None = None,
    ) -> PutResult:
        """Store ``data`` at ``key``. ``sha256``: the hex SHA-256 of ``data`` when the caller
        knows it (a blob's id), so the store need not hash the bytes again."""
        ...

    async def get(self, key: str) -> bytes: ...

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def delete(self, key: str) -> None: ...

    async def list_keys(self, prefix: str = "") -> list[str]: ...
