"""The typed context every job of a role works with, built once per worker process.

arq hands each job a ``dict`` (its ``ctx``); plantpipe keeps one :class:`RoleContext` in it
under ``ROLE_CONTEXT``, built at start-up from the one :class:`~pipeline.settings.Settings`
object the role's ``WorkerSettings`` was made from. Jobs receive it typed (see
``pipeline.runtime.job``); a role adds what only it holds by subclassing (the io role's
store and breaker, the gpu role's inference pool, the cpu role's render slots).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Self

from arq.connections import ArqRedis

from pipeline.runtime.deadletter import DeadLetters
from pipeline.runtime.enqueue import QueueNames
from pipeline.runtime.joins import JoinStore
from pipeline.runtime.uploads import Output, enqueue_uploads, stage, store_and_queue
from pipeline.schemas import UploadJob
from pipeline.settings import Settings
from pipeline.state.artifacts import ArtifactStore
from pipeline.state.blobs import BlobStore
from pipeline.state.sessions import SessionStore

ROLE_CONTEXT: Final = "role_context"
"""Key of the :class:`RoleContext` in arq's job ``ctx``."""

SETTINGS: Final = "settings"
"""Key of the role's :class:`Settings` in arq's worker ``ctx`` (set by ``role_worker_options``)."""


@dataclass
class RoleContext:
    """What every role holds: its settings, Redis and the stores built on it."""

    role: str
    queue: str  # the role's own queue (dead letters of its jobs replay there)
    settings: Settings
    redis: ArqRedis
    blobs: BlobStore
    artifacts: ArtifactStore
    sessions: SessionStore
    joins: JoinStore
    deadletters: DeadLetters
    queues: QueueNames

    @classmethod
    def build(
        cls,
        role: str,
        redis: ArqRedis,
        settings: Settings,
        *,
        queue: str | None = None,
        **extra: Any,
    ) -> Self:
        """The context of ``role`` on ``redis``: its queue is the role's own (``queue`` for a
        role plantpipe does not define); ``extra`` fills a subclass's own fields."""
        queues = QueueNames.from_settings(settings)
        if queue is None:
            if role not in ("io", "cpu", "gpu"):
                raise ValueError(f"role {role!r} is not io, cpu or gpu: name its queue")
            queue = str(getattr(queues, role))
        return cls(
            role=role,
            queue=queue,
            settings=settings,
            redis=redis,
            blobs=BlobStore(redis, settings),
            artifacts=ArtifactStore(redis, settings),
            sessions=SessionStore(redis, settings),
            joins=JoinStore(redis, settings),
            deadletters=DeadLetters(redis, settings),
            queues=queues,
            **extra,
        )

    async def stage(
        self, outputs: Sequence[Output], session_id: str | None = None, *, final: bool = False
    ) -> list[UploadJob]:
        """The upload path's first half: ``outputs`` stored as blobs, artifacts registered
        (pending). Returns the upload jobs for :meth:`enqueue_uploads`."""
        return await stage(self.blobs, self.artifacts, outputs, session_id, final=final)

    async def enqueue_uploads(self, jobs: Sequence[UploadJob]) -> None:
        """The upload path's second half: the staged uploads handed to the io role."""
        await enqueue_uploads(self.redis, self.settings, jobs)

    async def upload(
        self, outputs: Sequence[Output], session_id: str | None = None
    ) -> list[UploadJob]:
        """Both halves of the one upload path at once (:func:`store_and_queue`). Returns the queued
        upload jobs."""
        return await store_and_queue(
            self.blobs, self.artifacts, self.redis, self.settings, outputs, session_id
        )


def role_context(ctx: dict[str, Any]) -> RoleContext:
    """The :class:`RoleContext` kept in arq's ``ctx`` (a clear error when start-up did not run)."""
    found = ctx.get(ROLE_CONTEXT)
    if not isinstance(found, RoleContext):
        raise RuntimeError(
            "this job ran without its role context: run it in a plantpipe worker "
            "(`arq workers.<role>.WorkerSettings` or `plantpipe workers`)"
        )
    return found
