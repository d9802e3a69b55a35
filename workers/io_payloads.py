"""What one upload's payload goes through in the io role: the read of the artifacts' states
with the small payloads along, and the S3 request, its payload read from Redis under the byte
budget when it was not read along (the role's context: ``workers.io_context``).

The byte budget (``PLANTPIPE_IO_MEMORY_MB``) holds a payload's bytes from their read until S3
has answered; see ``pipeline.runtime.budget``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

from pipeline.schemas import UploadJob
from pipeline.state.redisio import typed
from pipeline.storage import PutResult
from workers.io_context import IoContext

#: Payloads up to this size are read in the same round trip as their artifact's state (when
#: the byte budget has room at once); larger ones when their upload's turn comes.
PREFETCH_MAX_BYTES: Final = 64 * 1024


@dataclass
class BlobState:
    """What the state read found for one upload: whether its artifact is uploaded already,
    and its payload's raw GET reply when it was read along (``held`` bytes of the budget)."""

    uploaded: bool
    prefetched: list[object]
    held: int = 0


@asynccontextmanager
async def read_states(ctx: IoContext, jobs: Sequence[UploadJob]) -> AsyncIterator[list[BlobState]]:
    """For each upload, its :class:`BlobState`, in one round trip (and one more to re-read the
    breaker when this process' view of it has lapsed); the payloads read along are held in the
    byte budget until :func:`let_go` (at the latest when the block ends). While the breaker is
    closed with no failures a small payload (≤ PREFETCH_MAX_BYTES) is read with its state when
    the budget has room at once (wasted only for a re-run job); every other payload is read
    by :func:`put_blob` when its upload goes, under the budget."""
    prefetch = await ctx.breaker.refresh()
    held = [
        job.blob.size
        if prefetch
        and job.blob.size <= PREFETCH_MAX_BYTES
        and ctx.memory.try_acquire(job.blob.size)
        else 0
        for job in jobs
    ]
    states = [BlobState(False, [], bytes_held) for bytes_held in held]
    try:
        async with typed(ctx.redis).pipeline(transaction=False) as pipe:
            for job, state in zip(jobs, states, strict=True):
                pipe.hget(ctx.artifacts.key(job.artifact_id), "state")
                if state.held:
                    pipe.get(ctx.blobs.key(job.blob))
            replies = iter(await pipe.execute())
        for state in states:
            state.uploaded = next(replies) in (b"uploaded", "uploaded")
            state.prefetched = [next(replies)] if state.held else []
        yield states
    finally:
        for state in states:
            let_go(ctx, state)


def let_go(ctx: IoContext, state: BlobState) -> None:
    """The upload is over for now: the bytes read along with its state leave the budget
    (at once, not when its batch ends: a sibling may be waiting for that room)."""
    ctx.memory.release(state.held)
    state.held = 0
    state.prefetched = []


async def put_blob(ctx: IoContext, job: UploadJob, state: BlobState, budget_s: float) -> PutResult:
    """The S3 request, within ``budget_s``: the blob's bytes to the upload's key. Bytes not
    read along with the state are read now, once the byte budget has room for them (waiting
    for room is this process's backlog, not S3's time: outside the budget)."""
    if state.prefetched:
        body = ctx.blobs.checked(job.blob, state.prefetched[0])
        async with asyncio.timeout(budget_s):
            return await send(ctx, job, body)
    async with ctx.memory.hold(job.blob.size), asyncio.timeout(budget_s):
        return await send(ctx, job, await ctx.blobs.get(job.blob))


async def send(ctx: IoContext, job: UploadJob, body: bytes) -> PutResult:
    return await ctx.store.put(
        job.key, body, content_type=job.content_type, metadata=job.metadata, sha256=job.blob.sha256
    )
