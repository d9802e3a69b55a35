"""Uploads a run could not finish (S3 out), kept on local disk and finished later.

When ``plantpipe run`` ends with uploads still pending, every object not yet in the store is
written (after the workers stopped, from its blob in Redis) under the run's local folder with
the store's own layout (``{session}/…``), and ``{session}/pending.json`` lists them with the
bucket, endpoint and region they go to. ``plantpipe run --resume DIR`` uploads them from
there — no Redis, no workers — and removes the manifest once all are in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field

from pipeline.cli.errors import EXIT_OK, EXIT_USAGE, fail
from pipeline.cli.output import emit, say
from pipeline.client import PipelineClient
from pipeline.errors import PipelineError
from pipeline.runtime.retry import describe
from pipeline.schemas import BlobRef, utcnow
from pipeline.settings import Settings
from pipeline.state.blobs import BlobMissing
from pipeline.storage import make_store
from pipeline.storage.local import LocalObjectStore

MANIFEST = "pending.json"
#: Exit code of a run whose counts are final and on disk but some uploads are still pending.
EXIT_PENDING = 3


class PendingUpload(BaseModel):
    key: str
    content_type: str
    size: int
    sha256: str
    metadata: dict[str, str] = Field(default_factory=dict)
    reason: str = ""


class PendingManifest(BaseModel):
    """``{session}/pending.json``: what is left to upload, and where to."""

    session_id: str
    bucket: str
    endpoint_url: str | None = None
    region: str
    created_at: datetime = Field(default_factory=utcnow)
    uploads: list[PendingUpload]


def _write_manifest(path: Path, manifest: PendingManifest) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2))
    os.replace(tmp, path)


async def keep_pending(
    client: PipelineClient, session_id: str, folder: Path, why: str
) -> tuple[list[PendingUpload], list[str]]:
    """Write every object of the session not yet in the store under ``folder`` (its key as
    the path). For S3, also ``{session}/pending.json``. Call once the workers stopped, while
    Redis still holds the blobs. Returns ``(kept, "key (why not)" of those not kept)``."""
    settings = client.settings
    record = await client.status(session_id)
    local = LocalObjectStore(folder)
    kept: list[PendingUpload] = []
    lost: list[str] = []
    for status in record.artifacts:
        if status.state == "uploaded":
            continue
        art = await client.artifacts.get(status.artifact_id)
        if art is None or art.sha256 is None:
            lost.append(f"{status.key} (its record is gone)")
            continue
        try:
            data = await client.blobs.get(BlobRef(sha256=art.sha256, size=art.size))
        except BlobMissing:
            lost.append(f"{status.key} (its bytes are gone from Redis)")
            continue
        try:
            await local.put(
                art.key,
                data,
                content_type=art.content_type,
                metadata=art.metadata,
                sha256=art.sha256,
            )
        except (OSError, PipelineError) as exc:
            lost.append(f"{status.key} (cannot write {folder / art.key}: {exc})")
            continue
        reason = f"{art.error_code}: {art.reason}" if art.reason else why
        kept.append(
            PendingUpload(
                key=art.key,
                content_type=art.content_type,
                size=art.size,
                sha256=art.sha256,
                metadata=art.metadata,
                reason=reason,
            )
        )
    if kept and settings.uses_s3:
        manifest = PendingManifest(
            session_id=session_id,
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            uploads=kept,
        )
        _write_manifest(folder / session_id / MANIFEST, manifest)
    return kept, lost


def find_manifests(path: Path) -> list[Path]:
    """``path/pending.json``, or every ``*/pending.json`` under ``path`` (a run's folder)."""
    if path.is_file() and path.name == MANIFEST:
        return [path]
    if not path.is_dir():
        raise fail(
            f"--resume {path}: no such folder (give the folder a run named for its pending uploads)"
        )
    found = [path / MANIFEST] if (path / MANIFEST).is_file() else sorted(path.glob(f"*/{MANIFEST}"))
    if not found:
        raise fail(
            f"--resume {path}: no {MANIFEST} there: nothing is pending (or the folder "
            "is not one a run named)",
            EXIT_USAGE,
        )
    return found


async def _resume_one(path: Path, base: Settings) -> tuple[int, list[str]]:
    """Upload what ``path`` lists; rewrite it with what is left (removed when nothing is).
    Returns ``(uploaded, still pending with why)``."""
    manifest = PendingManifest.model_validate_json(await asyncio.to_thread(path.read_text))
    root = path.parent.parent  # the manifest sits in {root}/{session}/
    settings = base.model_copy(
        update={
            "storage": "s3",
            "s3_bucket": manifest.bucket,
            "s3_endpoint_url": manifest.endpoint_url,
            "s3_region": manifest.region,
        }
    )
    store = make_store(settings)
    done: set[str] = set()
    problems: list[str] = []
    try:
        await store.start()

        async def one(upload: PendingUpload) -> None:
            data = await asyncio.to_thread((root / upload.key).read_bytes)
            if hashlib.sha256(data).hexdigest() != upload.sha256:
                problems.append(f"{upload.key}: the local copy changed since the run; not sent")
                return
            await store.put(
                upload.key,
                data,
                content_type=upload.content_type,
                metadata=upload.metadata,
                sha256=upload.sha256,
            )
            done.add(upload.key)

        results = await asyncio.gather(*(one(u) for u in manifest.uploads), return_exceptions=True)
        for upload, outcome in zip(manifest.uploads, results, strict=True):
            if isinstance(outcome, BaseException):
                problems.append(f"{upload.key}: {describe(outcome)}")
    except Exception as exc:  # the store cannot even start: S3 still out, bucket gone...
        problems.append(f"s3://{manifest.bucket}: {describe(exc)}")
    finally:
        await store.close()
    left = [u for u in manifest.uploads if u.key not in done]
    if left:
        _write_manifest(path, manifest.model_copy(update={"uploads": left}))
    else:
        await asyncio.to_thread(path.unlink)
    for key in sorted(done):
        emit(f"  uploaded s3://{manifest.bucket}/{key}")
    return len(done), problems


async def resume(path: Path, base: Settings) -> int:
    """``plantpipe run --resume DIR``: finish every pending upload kept under ``path``."""
    uploaded, problems, left = 0, [], 0
    for manifest in find_manifests(path):
        count, trouble = await _resume_one(manifest, base)
        uploaded += count
        problems += trouble
        if manifest.exists():
            left += len(json.loads(manifest.read_text())["uploads"])
    if left:
        for problem in problems:
            say(f"still pending: {problem}")
        say(
            f"{uploaded} uploaded, {left} still pending: run `plantpipe run --resume {path}` "
            "again once S3 answers"
        )
        return EXIT_PENDING
    say(f"all pending uploads finished ({uploaded} uploaded)")
    return EXIT_OK
