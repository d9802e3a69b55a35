"""A new session, written whole or not at all: photos stored once, the session record, its
join, the originals' uploads and the inference jobs (``PipelineClient.submit``'s writes).

Two edges are handled here:

- **Redis full** (``maxmemory`` with ``noeviction``): the session is refused before a byte is
  written when it would take Redis past ``PLANTPIPE_REDIS_SUBMIT_MAX_USED`` of its memory
  (:func:`pipeline.runtime.memory.check_room`); a write refused half-way (OOM) removes what
  was written — deletes are allowed at ``maxmemory`` — and raises :class:`RedisFull`.
- **A Sentinel failover while it is written** (``replica_acks`` > 0): the writes are waited for
  on a replica; when the master changed under them, they are made again on the new one
  (each write is idempotent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from redis.exceptions import RedisError

from pipeline.errors import TransientError
from pipeline.logs import get_logger
from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.graph import AGGREGATE, INFER_PHOTO
from pipeline.runtime.joins import JoinStore
from pipeline.runtime.memory import RedisFull, check_room, is_out_of_memory
from pipeline.runtime.replication import master_id, replica_acks, replicated
from pipeline.runtime.retry import describe
from pipeline.runtime.uploads import (
    Output,
    enqueue_uploads,
    stage,
    upload_holder,
    upload_job_ids,
)
from pipeline.schemas import AggregateJob, BlobRef, InferJob, UploadJob
from pipeline.settings import Settings
from pipeline.state.artifacts import ArtifactStore
from pipeline.state.blobs import BlobStore
from pipeline.state.ids import (
    aggregate_job_id,
    infer_holder,
    infer_job_id,
    photo_key,
    render_holder,
    session_join_id,
)
from pipeline.state.ids import artifact_id as make_artifact_id
from pipeline.state.keys import Keys
from pipeline.state.redisio import typed
from pipeline.state.sessions import SessionStore
from pipeline.vision.decode import SUPPORTED_TYPES

log = get_logger("pipeline.submission")


@dataclass
class NewSession:
    """One session about to be created from checked photos (``mimes``: their types)."""

    redis: ArqRedis
    settings: Settings
    session_id: str
    photos: Sequence[bytes]
    mimes: Sequence[str]
    metadata: dict[str, str]
    deadline_s: float | None

    @cached_property
    def keys(self) -> Keys:
        return Keys.from_settings(self.settings)

    @cached_property
    def queues(self) -> QueueNames:
        return QueueNames.from_settings(self.settings)

    @cached_property
    def sessions(self) -> SessionStore:
        return SessionStore(self.redis, self.settings)

    @cached_property
    def blobs(self) -> BlobStore:
        return BlobStore(self.redis, self.settings)

    async def store(self) -> None:
        """Write the session: refused (:class:`RedisFull`) when Redis has no room for it,
        nothing kept when Redis fills up half-way, kept through a Sentinel failover."""
        await check_room(
            self.redis, sum(map(len, self.photos)), self.settings.redis_submit_max_used
        )
        want = replica_acks(self.settings)
        before = await master_id(self.redis) if want else ""
        try:
            await self.write(create=True)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            await self.undo()
            raise RedisFull(
                f"Redis reached its maxmemory while the session was written ({describe(exc)}); "
                "nothing of it was kept: try again once running sessions finish, or give "
                "Redis more memory"
            ) from None
        if want:
            await self.keep(want, before)

    def originals(self) -> list[Output]:
        """The photos as the outputs to upload (each also held for inference and render)."""
        sid, count = self.session_id, len(self.photos)
        return [
            Output(
                make_artifact_id(sid, index, "original"),
                photo_key(sid, index, count, "original", SUPPORTED_TYPES[mime]),
                mime,
                data,
                metadata={"session": sid, "photo": str(index)},
                holders=(infer_holder(sid, index), render_holder(sid, index)),
            )
            for index, (data, mime) in enumerate(zip(self.photos, self.mimes, strict=True))
        ]

    async def write(self, *, create: bool) -> None:
        """Every write of the session. Each is idempotent (a re-run after a failover lost
        some of them completes the session); ``create=False`` leaves an existing session
        record as it is."""
        sid, count = self.session_id, len(self.photos)
        if create:
            await self.sessions.create(sid, count, self.metadata, deadline_s=self.deadline_s)
        await JoinStore(self.redis, self.settings).create(
            session_join_id(sid),
            count,
            AGGREGATE.callback(
                self.queues, AggregateJob(session_id=sid), job_id=aggregate_job_id(sid)
            ),
        )
        artifacts = ArtifactStore(self.redis, self.settings)
        uploads = await stage(self.blobs, artifacts, self.originals(), sid)
        blobs = [upload.blob for upload in uploads]
        await self.sessions.set_originals(sid, blobs)
        await enqueue_uploads(self.redis, self.settings, uploads)
        for index, (blob, mime) in enumerate(zip(blobs, self.mimes, strict=True)):
            job = InferJob(session_id=sid, index=index, photo_count=count, blob=blob, mime=mime)
            await INFER_PHOTO.enqueue(self.redis, self.queues, job, job_id=infer_job_id(sid, index))

    async def undo(self) -> None:
        """Remove whatever :meth:`write` wrote before Redis refused a write (at
        ``maxmemory`` only deletes are allowed, and they are all this does): the session, its
        join, its originals' artifacts, holds and blobs, and the jobs it queued."""
        sid = self.session_id
        originals = self.originals()
        uploads = [
            UploadJob(
                artifact_id=out.artifact_id,
                key=out.key,
                blob=BlobRef(sha256=BlobStore.digest(out.body), size=len(out.body)),
                content_type=out.content_type,
                session_id=sid,
            )
            for out in originals
        ]
        await self.sessions.discard(sid)
        await JoinStore(self.redis, self.settings).forget(session_join_id(sid))
        upload_ids = upload_job_ids(self.settings, uploads)
        infer_ids = [infer_job_id(sid, i) for i in range(len(self.photos))]
        client = typed(self.redis)
        await client.delete(
            *(self.keys.artifact(out.artifact_id) for out in originals),
            *(self.keys.artifact_events(out.artifact_id) for out in originals),
            *(job_key_prefix + job_id for job_id in [*upload_ids, *infer_ids]),
        )
        await client.zrem(self.queues.io, *upload_ids)
        await client.zrem(self.queues.gpu, *infer_ids)
        for out, upload in zip(originals, uploads, strict=True):
            for holder in (upload_holder(out.artifact_id), *out.holders):
                await self.blobs.release(upload.blob, holder)

    async def keep(self, want: int, before: str) -> None:
        """Return once the session is safe from a Sentinel failover: held by ``want``
        replicas (``WAIT``), all of its writes made to the master ``before`` names. When the
        master changed under the writes (a failover: what the old one acknowledged may be
        gone), they are made again on the new one — the session record only if missing —
        and waited for again. Too few replicas on an unchanged master keeps the session,
        with a warning (a replica is down or slow; nothing was lost)."""
        for _ in range(3):
            try:
                acked, now = await replicated(
                    self.redis, self.keys, want, self.settings.redis_replica_wait_s
                )
            except (RedisError, ConnectionError, OSError) as exc:
                log.warning("session.replication_unknown", error=describe(exc))
                acked, now = 0, await master_id(self.redis)
            else:
                if now == before:
                    if acked < want:
                        log.warning(
                            "session.not_replicated",
                            replicas=acked,
                            wanted=want,
                            risk="a failover before the replicas catch up can lose it",
                        )
                    return
            exists = bool(await typed(self.redis).exists(self.keys.session(self.session_id)))
            log.warning("session.rewritten", reason="Redis failed over", record_kept=exists)
            before = now
            await self.write(create=not exists)
        raise TransientError(
            f"session {self.session_id} could not be kept through Redis failovers (the "
            "master changed three times while it was written); submit the photos again",
            code="session_not_kept",
        )
