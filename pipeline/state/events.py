"""Per-session (and per-artifact) event streams on Redis: append and follow without polling.

Besides each session's own stream, every session change (created, status, photo, artifact)
and every dead letter is also noted in one stream per key prefix, the *feed*
(``Keys.feed``: fields ``type``, ``session`` and, for a status change, ``status``), so a
reader that watches many sessions — the dashboard — blocks on one stream instead of many."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from pipeline.state.redisio import text, typed

STREAM_MAXLEN = 10_000
FEED_MAXLEN = 10_000


def feed_fields(kind: str, session_id: str | None) -> dict[str, str]:
    """A feed entry's fields, for writers outside Lua (``pipe.xadd(feed, fields, ...)``)."""
    return {"type": kind, "session": session_id or ""}


async def follow(
    redis: Redis, stream: str, *, last_id: str = "0", block_ms: int = 5_000
) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """Yield ``(event_id, type, data)`` from ``stream``, blocking in XREAD between events.

    Starts from ``last_id`` ("0" = replay everything, so nothing that happened before the
    call is missed). Never returns by itself: the caller stops iterating.
    """
    client = typed(redis)
    cursor = last_id
    while True:
        reply = await client.xread({stream: cursor}, count=100, block=block_ms)
        for _name, entries in reply or []:
            for entry_id, fields in entries:
                cursor = text(entry_id)
                decoded = {text(k): text(v) for k, v in fields.items()}
                data = json.loads(decoded.get("data", "{}"))
                yield cursor, decoded.get("type", "unknown"), data


async def last_event_id(redis: Redis, stream: str) -> str:
    """Id of the newest event in ``stream`` ("0" when empty): follow from here on."""
    client = typed(redis)
    newest = await client.xrevrange(stream, count=1)
    return text(newest[0][0]) if newest else "0"


async def read_after(
    redis: Redis, stream: str, cursor: str, *, block_ms: int, count: int = 500
) -> list[tuple[str, dict[str, str]]]:
    """The entries of ``stream`` after ``cursor``, as ``(id, fields)``; blocks up to
    ``block_ms`` in XREAD while there are none (then returns ``[]``)."""
    client = typed(redis)
    reply = await client.xread({stream: cursor}, count=count, block=block_ms)
    return [
        (text(entry_id), {text(k): text(v) for k, v in fields.items()})
        for _name, entries in reply or []
        for entry_id, fields in entries
    ]
