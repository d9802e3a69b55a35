"""Per-session (and per-artifact) event streams on Redis: append and follow without polling."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from pipeline.state.redisio import text

STREAM_MAXLEN = 10_000


async def follow(
    redis: Redis, stream: str, *, last_id: str = "0", block_ms: int = 5_000
) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """Yield ``(event_id, type, data)`` from ``stream``, blocking in XREAD between events.

    Starts from ``last_id`` ("0" = replay everything, so nothing that happened before the
    call is missed). Never returns by itself: the caller stops iterating.
    """
    client: Any = redis
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
    client: Any = redis
    newest = await client.xrevrange(stream, count=1)
    return text(newest[0][0]) if newest else "0"
