"""Small typed helpers over redis-py's asyncio client (whose stubs are loose)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


@functools.cache
def script_sha(source: str) -> str:
    """The SHA1 Redis knows a script by (computed once per script)."""
    return hashlib.sha1(source.encode()).hexdigest()


@dataclass(frozen=True)
class LuaCall:
    """One script run: what ``run_lua`` takes, as a value (so several can share a trip)."""

    source: str
    keys: Sequence[str]
    args: Sequence[Any] = field(default_factory=tuple)


async def run_lua(redis: Redis, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run a Lua script atomically: EVALSHA, and EVAL (which caches it) the first time."""
    client: Any = redis
    try:
        return await client.evalsha(script_sha(source), len(keys), *keys, *args)
    except NoScriptError:
        return await client.eval(source, len(keys), *keys, *args)


async def run_lua_batch(redis: Redis, calls: Sequence[LuaCall]) -> list[Any]:
    """Run several scripts in one round trip (each atomic on its own, in order).

    A script Redis does not know yet answers NOSCRIPT without running, so it is simply run
    again on its own through ``run_lua``."""
    client: Any = redis
    async with client.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(script_sha(call.source), len(call.keys), *call.keys, *call.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    for i, (call, result) in enumerate(zip(calls, results, strict=True)):
        if isinstance(result, NoScriptError):
            results[i] = await run_lua(redis, call.source, call.keys, call.args)
        elif isinstance(result, Exception):
            raise result
    return results


def text(value: Any) -> str:
    """Redis reply (bytes or str) to str."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
