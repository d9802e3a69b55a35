"""Dead letters: jobs that gave up, kept with their reason so they can be replayed."""

from __future__ import annotations

import time

from arq.connections import ArqRedis

from pipeline.runtime.enqueue import enqueue
from pipeline.schemas import DeadLetter
from pipeline.settings import Settings
from pipeline.state.events import FEED_MAXLEN, feed_fields
from pipeline.state.keys import Keys
from pipeline.state.redisio import AsyncRedisPipeline, text, typed

NOT_REPLAYABLE = (
    "its photo is already recorded as failed in its session, so replaying cannot change the "
    "result; fix the cause and resubmit the photo (`plantpipe submit PHOTO`)"
)


class DeadLetters:
    def __init__(self, redis: ArqRedis, settings: Settings) -> None:
        self._redis = redis
        self._client = typed(redis)
        self._keys = Keys.from_settings(settings)
        self._ttl = settings.session_ttl_s

    def _note(self, pipe: AsyncRedisPipeline, kind: str, session_id: str | None) -> None:
        """Note the change in the prefix's feed (pipeline.state.events), in ``pipe``."""
        pipe.xadd(
            self._keys.feed, feed_fields(kind, session_id), maxlen=FEED_MAXLEN, approximate=True
        )
        pipe.expire(self._keys.feed, self._ttl)

    async def add(self, letter: DeadLetter) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.dead_letters, letter.id, letter.model_dump_json())
            pipe.zadd(self._keys.dead_letter_order, {letter.id: time.time()})
            self._note(pipe, "deadletter.added", letter.session_id)
            await pipe.execute()

    async def list(self, limit: int = 1000) -> list[DeadLetter]:
        ids = await self._client.zrange(self._keys.dead_letter_order, 0, limit - 1)
        if not ids:
            return []
        raws = await self._client.hmget(self._keys.dead_letters, ids)
        return [DeadLetter.model_validate_json(text(r)) for r in raws if r is not None]

    async def get(self, letter_id: str) -> DeadLetter | None:
        raw = await self._client.hget(self._keys.dead_letters, letter_id)
        return DeadLetter.model_validate_json(text(raw)) if raw is not None else None

    async def remove(self, letter_id: str) -> bool:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys.dead_letters, letter_id)
            pipe.zrem(self._keys.dead_letter_order, letter_id)
            self._note(pipe, "deadletter.removed", None)
            removed, *_ = await pipe.execute()
        return bool(removed)

    async def replay(self, letter_id: str) -> str | None:
        """Enqueue the job again under a fresh id; remove the letter. Returns the new job id."""
        letter = await self.get(letter_id)
        if letter is None or not letter.replayable:
            return None
        new_id = f"{letter.job_id}:replay:{int(time.time() * 1000)}"
        job = await enqueue(
            self._redis, letter.function, _job_id=new_id, _queue_name=letter.queue, **letter.kwargs
        )
        if job is None:
            return None
        await self.remove(letter_id)
        return new_id
