"""Local filesystem object store (the embedded default): atomic writes, sidecar metadata."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from pathlib import Path

from pipeline.errors import PermanentError
from pipeline.storage.base import ObjectInfo, PutResult, check_key

_META_DIR = ".plantpipe-meta"


class LocalObjectStore:
    """Objects are files under ``root``; content type and metadata live in a sidecar JSON."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.description = f"local directory {self.root}"

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentError(
                f"cannot create output directory {self.root}: {exc}", code="storage_unwritable"
            ) from exc
        if not os.access(self.root, os.W_OK):
            raise PermanentError(f"{self.root} is not writable", code="storage_unwritable")

    async def close(self) -> None:
        return None

    def path(self, key: str) -> Path:
        """The file of ``key``: a checked key, resolved (links included) inside ``root``."""
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise PermanentError(f"key {key!r} escapes {self.root}", code="invalid_key")
        return path

    _path = path

    def _meta_path(self, key: str) -> Path:
        return self.root / _META_DIR / (check_key(key) + ".json")

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        sha256: str | None = None,
    ) -> PutResult:
        path = self._path(key)
        sha = sha256 or hashlib.sha256(data).hexdigest()
        meta = {"content_type": content_type, "metadata": metadata or {}, "sha256": sha}

        def write() -> None:
            self._atomic_write(path, data)
            self._atomic_write(self._meta_path(key), json.dumps(meta).encode())

        await asyncio.to_thread(write)
        return PutResult(key=key, size=len(data), etag=hashlib.md5(data).hexdigest(), sha256=sha)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise PermanentError(f"no object {key!r} in {self.root}", code="NoSuchKey") from exc

    async def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.exists():
            return None
        meta: dict[str, object] = {}
        meta_path = self._meta_path(key)
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
        raw_md = meta.get("metadata")
        md = {str(k): str(v) for k, v in raw_md.items()} if isinstance(raw_md, dict) else {}
        return ObjectInfo(
            key=key,
            size=path.stat().st_size,
            content_type=str(meta.get("content_type", "application/octet-stream")),
            metadata=md,
            sha256=str(meta["sha256"]) if isinstance(meta.get("sha256"), str) else None,
        )

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)

    async def list_keys(self, prefix: str = "") -> list[str]:
        def walk() -> list[str]:
            out: list[str] = []
            for p in self.root.rglob("*"):
                rel = p.relative_to(self.root).as_posix()
                temp = p.name.startswith(".") and p.name.endswith(".tmp")
                internal = temp or rel.startswith(_META_DIR)
                if p.is_file() and not internal and rel.startswith(prefix):
                    out.append(rel)
            return sorted(out)

        return await asyncio.to_thread(walk)
