"""Small typed helpers over redis-py's asyncio client (whose stubs are loose)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis


async def run_lua(redis: Redis, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run a Lua script atomically (EVALSHA with a transparent EVAL fallback)."""
    client: Any = redis
    script = client.register_script(source)
    return await script(keys=list(keys), args=list(args))


def text(value: Any) -> str:
    """Redis reply (bytes or str) to str."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
