"""Sessions as a list: newest first, by status, by text; a page of summaries at a time.

The indexes are kept by :mod:`pipeline.state.sessions` in the same scripts that change a
session: ``Keys.sessions_index`` (every session, scored by creation time) and one sorted set
per status (``Keys.sessions_by_status``). A page without a text filter is one ZREVRANGE and
one script run (``pipeline.state.lua.listing``) that sums the page's photos; a text filter
reads the index and every session's search text (``Keys.sessions_search``) in two bulk
replies and matches here.
Entries whose session has expired are dropped from the indexes as they are met.
"""

from __future__ import annotations

import json
import math
import time

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from pipeline.schemas import SessionStatus, SessionSummary
from pipeline.settings import Settings
from pipeline.state.keys import Keys
from pipeline.state.lua import listing as lua
from pipeline.state.redisio import text, typed
from pipeline.state.sessions import search_text

STATUSES: tuple[SessionStatus, ...] = ("pending", "processing", "completed", "warning", "failed")
MAX_PER_PAGE = 200


class SessionPage(BaseModel):
    """One page of the sessions list, with what the filters left and the counts by status."""

    sessions: list[SessionSummary]
    total: int = Field(description="sessions that match the filters")
    page: int
    pages: int
    per_page: int
    status: SessionStatus | None = None
    query: str = ""
    counts: dict[str, int] = Field(description="sessions per status (and 'all'), no filter")


class SessionListing:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._client = typed(redis)
        self._keys = Keys.from_settings(settings)
        self._ttl = settings.session_ttl_s

    def _index(self, status: SessionStatus | None) -> str:
        return self._keys.sessions_by_status(status) if status else self._keys.sessions_index

    async def counts(self) -> dict[str, int]:
        """Sessions per status and in all, after dropping entries older than the records'
        TTL (their sessions have expired)."""
        oldest = time.time() - self._ttl
        indexes = [self._keys.sessions_index, *(self._index(s) for s in STATUSES)]
        async with self._client.pipeline(transaction=False) as pipe:
            for key in indexes:
                pipe.zremrangebyscore(key, "-inf", f"({oldest}")
            for key in indexes:
                pipe.zcard(key)
            replies = await pipe.execute()
        sizes = [int(n) for n in replies[len(indexes) :]]
        return {"all": sizes[0], **dict(zip(STATUSES, sizes[1:], strict=True))}

    async def summaries(self, session_ids: list[str]) -> list[SessionSummary]:
        """Summaries of the sessions that still exist, in the order given."""
        if not session_ids:
            return []
        return await lua.summaries(self._redis, self._keys, session_ids)

    async def matching(self, status: SessionStatus | None, query: str) -> list[str]:
        """Ids (newest first) whose id, metadata or failure reason contains ``query`` (case
        does not matter), of ``status`` when given.

        Two bulk reads — the index in order and the search texts (``Keys.sessions_search``,
        written by the session scripts) — and the matching here: no per-session command, so
        10,000 sessions cost Redis two replies. A session without a text (made before there
        were texts) is read from its record and its text written; texts of sessions that
        have left the index are dropped."""
        needle = query.lower().encode()
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrevrange(self._index(status), 0, -1)
            if status is not None:
                pipe.zrange(self._keys.sessions_index, 0, -1)
            pipe.hgetall(self._keys.sessions_search)
            replies = await pipe.execute()
        ids: list[bytes] = replies[0]
        texts: dict[bytes, bytes] = replies[-1]
        missing = [sid for sid in ids if sid not in texts]
        if missing:
            texts.update(await self._backfill(missing))
        known = set(ids) if status is None else set(replies[1])
        stale = [sid for sid in texts if sid not in known]
        if stale:
            await self._client.hdel(self._keys.sessions_search, *stale)
        return [text(sid) for sid in ids if needle in texts.get(sid, b"")]

    async def _backfill(self, ids: list[bytes]) -> dict[bytes, bytes]:
        """Search texts of sessions that have none, from their records (and stored)."""
        found: dict[bytes, bytes] = {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            async with self._client.pipeline(transaction=False) as pipe:
                for sid in chunk:
                    pipe.hmget(self._keys.session(text(sid)), "metadata", "reason")
                rows = await pipe.execute()
            for sid, (meta, reason) in zip(chunk, rows, strict=True):
                if meta is None:
                    continue  # expired: its index entries go at the next summary
                value = search_text(text(sid), json.loads(meta))
                if reason:
                    value += "\n" + text(reason).lower()
                found[sid] = value.encode()
        if found:
            await self._client.hset(self._keys.sessions_search, mapping=found)
        return found

    async def page(
        self,
        *,
        status: SessionStatus | None = None,
        query: str = "",
        page: int = 1,
        per_page: int = 50,
    ) -> SessionPage:
        """Page ``page`` (from 1) of the sessions, newest first, filtered by status and text."""
        per_page = max(1, min(per_page, MAX_PER_PAGE))
        page = max(1, page)
        query = query.strip()
        counts = await self.counts()
        start = (page - 1) * per_page
        if query:
            matches = await self.matching(status, query)
            total, ids = len(matches), matches[start : start + per_page]
        else:
            total = counts[status or "all"]
            raw = await self._client.zrevrange(self._index(status), start, start + per_page - 1)
            ids = [text(i) for i in raw]
        return SessionPage(
            sessions=await self.summaries(ids),
            total=total,
            page=page,
            pages=max(1, math.ceil(total / per_page)),
            per_page=per_page,
            status=status,
            query=query,
            counts=counts,
        )
