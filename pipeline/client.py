"""PipelineClient: submit photos, follow sessions and upload objects from any asyncio service.

```python
from pipeline.client import PipelineClient

async with PipelineClient.from_settings() as client:
    handle = await client.upload("some/key.bin", data, content_type="application/octet-stream")
    await handle.wait()                       # raises with the reason if the upload failed
    session_id = await client.submit([jpeg_bytes, png_bytes], metadata={"bench": "A-12"})
    result = await client.wait(session_id, timeout=300)   # terminal status
    status = await client.status(session_id)
```
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

from arq.connections import ArqRedis

from pipeline.errors import UploadFailed
from pipeline.runtime.coalesce import SameTurnBatcher
from pipeline.runtime.connection import fail_fast, open_pool, redis_settings
from pipeline.runtime.deadletter import DeadLetters
from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.intake import check_photos
from pipeline.runtime.metadata import clean_metadata, upload_metadata
from pipeline.runtime.serialization import deserialize, serialize
from pipeline.runtime.submission import NewSession
from pipeline.runtime.uploads import (
    Output,
    stage,
    store_and_queue,
)
from pipeline.schemas import (
    TERMINAL_STATUSES,
    ArtifactRecord,
    DeadLetter,
    SessionEvent,
    SessionRecord,
    SessionResult,
    UploadItem,
    UploadJob,
)
from pipeline.settings import Settings, get_settings
from pipeline.state.artifacts import ArtifactStore
from pipeline.state.blobs import BlobStore
from pipeline.state.events import follow, last_event_id
from pipeline.state.keys import Keys
from pipeline.state.sessions import SessionStore


class UploadHandle:
    """Follows one upload; ``await handle.wait()`` returns its record or raises UploadFailed."""

    def __init__(self, client: PipelineClient, artifact_id: str, key: str) -> None:
        self._client = client
        self.artifact_id = artifact_id
        self.key = key

    async def state(self) -> ArtifactRecord:
        record = await self._client.artifacts.get(self.artifact_id)
        if record is None:
            raise LookupError(f"no upload record {self.artifact_id} (expired?)")
        return record

    async def wait(self, timeout: float | None = None) -> ArtifactRecord:
        """Return once uploaded; raise UploadFailed with S3's error code if it failed."""
        stream = self._client.keys.artifact_events(self.artifact_id)
        async with asyncio.timeout(timeout):
            # Read the stream's position *before* the state, so no event can slip between.
            last_id = await last_event_id(self._client.redis, stream)
            record = await self.state()
            if record.state == "uploaded":
                return record
            if record.state == "failed":
                raise self._failure(record.error_code, record.reason)
            async for _id, kind, data in follow(self._client.redis, stream, last_id=last_id):
                if kind == "artifact.uploaded":
                    return await self.state()
                if kind == "artifact.failed":
                    raise self._failure(data.get("error_code"), data.get("reason"))
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(self, code: object, reason: object) -> UploadFailed:
        return UploadFailed(
            f"upload of {self.key!r} failed: {reason or 'unknown'}",
            code=str(code or "upload_failed"),
        )


class PipelineClient:
    def __init__(self, settings: Settings, redis: ArqRedis | None = None) -> None:
        self.settings = settings
        self.keys = Keys.from_settings(settings)
        self.queues = QueueNames.from_settings(settings)
        self._redis = redis
        self._owns_redis = redis is None
        self._uploads: SameTurnBatcher[Output] = SameTurnBatcher(self._store_and_queue)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PipelineClient:
        return cls(settings or get_settings())

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._redis is None:
            rs = redis_settings(self.settings)
            # Fail at once when Redis is not there at all; once connected, the pool's retry
            # policy rides out a restart (see pipeline.runtime.connection.redis_settings).
            probe = await open_pool(fail_fast(rs))
            await probe.aclose()
            self._redis = await open_pool(
                rs,
                job_serializer=serialize,
                job_deserializer=deserialize,
                default_queue_name=self.queues.io,
            )

    async def close(self) -> None:
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()
            self._redis = None

    @property
    def redis(self) -> ArqRedis:
        if self._redis is None:
            raise RuntimeError("PipelineClient is not connected: use `async with` or connect()")
        return self._redis

    @property
    def blobs(self) -> BlobStore:
        return BlobStore(self.redis, self.settings)

    @property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.redis, self.settings)

    async def _stage(
        self, outputs: Sequence[Output], session_id: str | None = None
    ) -> list[UploadJob]:
        return await stage(self.blobs, self.artifacts, outputs, session_id)

    @property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.redis, self.settings)

    # --- uploads ----------------------------------------------------------------------

    async def upload(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> UploadHandle:
        """Queue ``data`` for upload to ``key`` by the io role; returns at once. Uploads asked
        for in the same turn of the event loop (many tasks at once) share io jobs, as
        ``upload_many``'s do; each keeps its own handle, state, retries and dead letter."""
        item = UploadItem(key=key, data=data, content_type=content_type, metadata=metadata or {})
        [output] = self._outputs([item])
        await self._uploads.add(output)
        return UploadHandle(self, output.artifact_id, output.key)

    async def upload_many(self, items: Sequence[UploadItem]) -> list[UploadHandle]:
        """Queue several uploads at once; returns a handle per item, in order, at once.

        They travel to the io role in batches of at most ``PLANTPIPE_IO_BATCH_MAX`` items and
        about ``PLANTPIPE_IO_BATCH_MAX_BYTES`` (one job's bookkeeping per batch; each batch is
        queued as soon as it is stored, so io starts on it while the rest are stored), while
        each item keeps its own state, retries and dead letter: one item's failure never fails
        another. Every item is checked (key, metadata, size) before anything is stored."""
        outputs = self._outputs(items)
        await self._store_and_queue(outputs)
        return [UploadHandle(self, out.artifact_id, out.key) for out in outputs]

    def _outputs(self, items: Sequence[UploadItem]) -> list[Output]:
        outputs = []
        for item in items:
            meta = upload_metadata(item)
            self.blobs.check_size(item.data)
            outputs.append(
                Output(uuid.uuid4().hex, item.key, item.content_type, item.data, metadata=meta)
            )
        return outputs

    async def _store_and_queue(self, outputs: list[Output]) -> None:
        await store_and_queue(self.blobs, self.artifacts, self.redis, self.settings, outputs)

    # --- sessions ---------------------------------------------------------------------

    @property
    def sessions(self) -> SessionStore:
        return SessionStore(self.redis, self.settings)

    async def submit(
        self,
        photos: Sequence[bytes],
        metadata: dict[str, str] | None = None,
        *,
        content_types: Sequence[str | None] | None = None,
        deadline_s: float | None = None,
        decode_check: bool = True,
    ) -> str:
        """Check every photo, store each once, create the session, enqueue the work.

        Returns the session id at once. Raises :class:`InvalidImage` (naming the photo) or
        ``ValueError`` before anything is stored if any photo is unacceptable: empty, too
        large, not JPEG/PNG/WebP, over ``PLANTPIPE_MAX_PIXELS``, truncated or damaged
        (a full decode, off the event loop: ``pipeline.runtime.intake``). ``decode_check=False``
        leaves the decode to the workers (the cheap checks still run): for callers that
        decoded the photos already, and tests of the workers' own refusals.
        """
        if not photos:
            raise ValueError("submit needs at least one photo")
        declared = list(content_types) if content_types is not None else [None] * len(photos)
        if len(declared) != len(photos):
            raise ValueError("content_types must have one entry per photo")
        meta = clean_metadata(metadata)
        mimes = await check_photos(photos, declared, self.settings, decode=decode_check)
        session = NewSession(
            self.redis, self.settings, uuid.uuid4().hex, photos, mimes, meta, deadline_s
        )
        await session.store()
        return session.session_id

    async def status(self, session_id: str) -> SessionRecord:
        record = await self.sessions.get(session_id)
        if record is None:
            raise LookupError(f"no session {session_id!r} (unknown or expired)")
        return record

    async def events(
        self, session_id: str, *, from_start: bool = True, artifacts: bool = False
    ) -> AsyncIterator[SessionEvent]:
        """The session's events as they happen (replaying earlier ones with ``from_start``).

        Ends after the event that makes the session terminal (``session.status`` with
        ``completed``, ``warning`` or ``failed``); with ``artifacts``, once every artifact has
        also settled (uploaded, or failed). On a session that has already ended it replays
        its events (``from_start``) or yields nothing. Raises ``LookupError`` for an unknown
        session."""
        stream = self.keys.session_events(session_id)
        start = "0" if from_start else await last_event_id(self.redis, stream)
        record = await self.status(session_id)
        if not from_start and self._done(record, artifacts):
            return
        terminal = False
        async for event_id, kind, data in follow(self.redis, stream, last_id=start):
            yield SessionEvent(id=event_id, type=kind, session_id=session_id, data=data)
            if kind == "session.status" and data.get("status") in TERMINAL_STATUSES:
                terminal = True
            elif not terminal or kind not in (
                "artifacts.ready",
                "artifact.failed",
                "artifact.uploaded",
            ):
                continue
            if not artifacts:
                return
            if self._done(await self.status(session_id), artifacts):
                return

    async def wait(
        self, session_id: str, timeout: float | None = None, *, artifacts: bool = False
    ) -> SessionRecord:
        """Block until the session is terminal (and, with ``artifacts``, every artifact has
        settled: uploaded, or failed with its reason in ``plantpipe failed list``). Follows the
        event stream: no polling. Raises TimeoutError."""
        stream = self.keys.session_events(session_id)
        async with asyncio.timeout(timeout):
            last_id = await last_event_id(self.redis, stream)
            record = await self.status(session_id)
            if self._done(record, artifacts):
                return record
            async for _id, kind, data in follow(self.redis, stream, last_id=last_id):
                if kind in ("artifacts.ready", "artifact.failed") or (
                    kind == "session.status" and data.get("status") in TERMINAL_STATUSES
                ):
                    record = await self.status(session_id)
                    if self._done(record, artifacts):
                        return record
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _done(record: SessionRecord, artifacts: bool) -> bool:
        return record.terminal and (
            not artifacts or record.artifacts_ready or record.artifacts_settled
        )

    async def result(self, session_id: str) -> SessionResult:
        """The result document (also uploaded as ``{session}/results.json``)."""
        result = await self.sessions.result(session_id)
        if result is None:
            record = await self.status(session_id)
            raise LookupError(
                f"session {session_id} has no result yet (status {record.status}, "
                f"stage {record.stage}); await client.wait() first"
            )
        return result

    # --- dead letters -----------------------------------------------------------------

    async def failed(self) -> list[DeadLetter]:
        """Jobs that gave up, oldest first, with their error code and reason."""
        return await self.dead_letters.list()

    async def retry_failed(self, ids: list[str] | None = None) -> list[str]:
        """Replay dead letters (all replayable ones when ``ids`` is None). Returns new job ids."""
        letters = self.dead_letters
        targets = ids if ids is not None else [d.id for d in await letters.list() if d.replayable]
        replayed: list[str] = []
        for letter_id in targets:
            letter = await letters.get(letter_id)
            if letter is not None and letter.function == "upload":
                # The artifact is pending again until the replayed upload reports.
                job = UploadJob.model_validate(letter.kwargs["payload"])
                await self.artifacts.transition(
                    job.artifact_id, "pending", session_id=job.session_id
                )
            new_id = await letters.replay(letter_id)
            if new_id is not None:
                replayed.append(new_id)
        return replayed
