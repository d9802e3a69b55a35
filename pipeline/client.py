"""PipelineClient: submit photos, follow sessions and upload objects from any asyncio service.

```python
from pipeline.client import PipelineClient

async with PipelineClient.from_settings() as client:
    handle = await client.upload("some/key.bin", data, content_type="application/octet-stream")
    await handle.wait()
```
"""

from __future__ import annotations

import asyncio
import uuid
from types import TracebackType
from typing import Self

from arq import create_pool
from arq.connections import ArqRedis

from pipeline.artifacts import ArtifactStore
from pipeline.blobs import BlobStore
from pipeline.deadletter import DeadLetters
from pipeline.errors import UploadFailed
from pipeline.events import follow, last_event_id
from pipeline.keys import Keys
from pipeline.queue import QueueNames, deserialize, redis_settings, serialize
from pipeline.schemas import ArtifactRecord, DeadLetter, UploadJob
from pipeline.settings import Settings, get_settings
from pipeline.storage.base import check_key


def upload_job_id(artifact_id: str, deferrals: int = 0) -> str:
    """Deterministic arq job id of an artifact's upload (a deferral gets its own)."""
    return f"upload:{artifact_id}" if deferrals == 0 else f"upload:{artifact_id}:defer:{deferrals}"


def upload_holder(artifact_id: str) -> str:
    """Name under which an upload holds its blob."""
    return f"upload:{artifact_id}"


async def enqueue_upload(redis: ArqRedis, settings: Settings, job: UploadJob) -> None:
    """Hand an upload to the io role (idempotent per artifact id)."""
    await redis.enqueue_job(
        "upload",
        payload=job.model_dump(mode="json"),
        _job_id=upload_job_id(job.artifact_id, job.deferrals),
        _queue_name=QueueNames.from_settings(settings).io,
    )


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
            self._redis = await create_pool(
                redis_settings(self.settings),
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
        """Queue ``data`` for upload to ``key`` by the io role; returns at once."""
        check_key(key)
        artifact_id = uuid.uuid4().hex
        blob = await self.blobs.put(data, [upload_holder(artifact_id)])
        record = ArtifactRecord(
            artifact_id=artifact_id, key=key, content_type=content_type, size=len(data)
        )
        await self.artifacts.register([record])
        job = UploadJob(
            artifact_id=artifact_id,
            key=key,
            blob=blob,
            content_type=content_type,
            metadata=metadata or {},
        )
        await enqueue_upload(self.redis, self.settings, job)
        return UploadHandle(self, artifact_id, key)

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
