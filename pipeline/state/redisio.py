"""The one adapter over redis-py's asyncio client, whose own annotations are loose.

redis-py declares every command as returning ``Awaitable[T] | T`` (one class serves the sync
and async clients), mostly with ``T = Any``. :class:`AsyncRedisClient` and
:class:`AsyncRedisPipeline` declare the commands plantpipe sends, each with the reply redis-py
hands back for a client made with ``decode_responses=False`` (arq's, plantpipe's: bytes)
under RESP2; :func:`typed` is the one place the real client is taken as one — a ``cast``,
nothing at run time: the same object, the same commands, the same round trips.

Code elsewhere takes a ``Redis`` (or arq's ``ArqRedis``) as before and calls
``typed(redis)`` to send commands; Lua scripts run through :mod:`pipeline.state.lua`.
``tests/unit/test_redis_types.py`` checks that every command declared here exists on
redis-py's client (and pipeline) with these parameter names, and that no module outside this
one holds a Redis client typed ``Any``.

A pipeline's commands are queued, not awaited (each returns the pipeline); ``execute()``
sends them and returns their replies in order: ``list[Any]``, since their types depend on
what was queued (with ``raise_on_error=False`` a failed command's reply is its exception).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, TypeAlias, TypeVar, cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

#: A key or hash field as plantpipe passes them.
Key: TypeAlias = str | bytes
#: A value Redis stores (redis-py encodes numbers as their decimal text).
Value: TypeAlias = str | bytes | int | float
#: The fields of one ``HSET`` mapping: all ``str`` or all ``bytes``.
FieldT = TypeVar("FieldT", str, bytes)
#: A Lua script's reply (``EVAL``/``EVALSHA``): an integer (a Lua number, truncated; true is
#: 1), a bulk string, a table as a list, or nil (a Lua false or nil).
LuaReply: TypeAlias = int | bytes | list["LuaReply"] | None
#: A stream entry as XREAD and XREVRANGE return it: its id and its fields.
StreamEntry: TypeAlias = tuple[bytes, dict[bytes, bytes]]


class AsyncRedisPipeline(Protocol):
    """``client.pipeline(...)``: ``async with`` it, queue commands (not awaited), then
    ``await pipe.execute()``."""

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    async def execute(self, raise_on_error: bool = True) -> list[Any]: ...

    def delete(self, *names: Key) -> Self: ...
    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Value) -> Self: ...
    def execute_command(self, *args: Value) -> Self: ...
    def expire(self, name: Key, time: int) -> Self: ...
    def get(self, name: Key) -> Self: ...
    def hdel(self, name: Key, *keys: Key) -> Self: ...
    def hget(self, name: Key, key: Key) -> Self: ...
    def hgetall(self, name: Key) -> Self: ...
    def hmget(self, name: Key, keys: Key | Sequence[Key], *args: Key) -> Self: ...
    def hset(
        self,
        name: Key,
        key: Key | None = None,
        value: Value | None = None,
        mapping: Mapping[FieldT, Value] | None = None,
    ) -> Self: ...
    def info(self, section: str | None = None) -> Self: ...
    def lpush(self, name: Key, *values: Value) -> Self: ...
    def ltrim(self, name: Key, start: int, end: int) -> Self: ...
    def pexpire(self, name: Key, time: int) -> Self: ...
    def sadd(self, name: Key, *values: Value) -> Self: ...
    def set(
        self,
        name: Key,
        value: Value,
        ex: int | None = None,
        px: int | None = None,
        nx: bool = False,
    ) -> Self: ...
    def xadd(
        self,
        name: Key,
        fields: Mapping[str, Value],
        *,
        maxlen: int | None = None,
        approximate: bool = True,
    ) -> Self: ...
    def zadd(self, name: Key, mapping: Mapping[str, float]) -> Self: ...
    def zcard(self, name: Key) -> Self: ...
    def zrange(self, name: Key, start: int, end: int) -> Self: ...
    def zrem(self, name: Key, *values: Value) -> Self: ...
    def zremrangebyscore(self, name: Key, min: float | str, max: float | str) -> Self: ...
    def zrevrange(self, name: Key, start: int, end: int) -> Self: ...


class AsyncRedisClient(Protocol):
    """The commands plantpipe sends outside pipelines and Lua, with their replies."""

    def pipeline(
        self, transaction: bool = True, shard_hint: str | None = None
    ) -> AsyncRedisPipeline: ...
    def scan_iter(self, match: Key | None = None, count: int | None = None) -> AsyncIterator[bytes]:
        """Every key matching ``match`` (SCAN, ``count`` per step)."""
        ...

    async def aclose(self) -> None: ...
    async def blpop(
        self, keys: Sequence[Key], timeout: float | None = 0
    ) -> tuple[bytes, bytes] | None:
        """``(list, value)``, or None when ``timeout`` passed first."""
        ...

    async def config_get(self, pattern: Key = "*") -> dict[str | bytes, str | bytes | None]: ...
    async def delete(self, *names: Key) -> int: ...
    async def eval(self, script: str | bytes, numkeys: int, *keys_and_args: Value) -> LuaReply: ...
    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Value) -> LuaReply: ...
    async def exists(self, *names: Key) -> int: ...
    async def expire(self, name: Key, time: int) -> bool: ...
    async def get(self, name: Key) -> bytes | None: ...
    async def hdel(self, name: Key, *keys: Key) -> int: ...
    async def hexists(self, name: Key, key: Key) -> bool: ...
    async def hget(self, name: Key, key: Key) -> bytes | None: ...
    async def hgetall(self, name: Key) -> dict[bytes, bytes]: ...
    async def hlen(self, name: Key) -> int: ...
    async def hmget(
        self, name: Key, keys: Key | Sequence[Key], *args: Key
    ) -> list[bytes | None]: ...
    async def hset(
        self,
        name: Key,
        key: Key | None = None,
        value: Value | None = None,
        mapping: Mapping[FieldT, Value] | None = None,
    ) -> int: ...
    async def hsetnx(self, name: Key, key: Key, value: Value) -> int: ...
    async def info(self, section: str | None = None) -> dict[str, Any]:
        """INFO's fields, parsed: ints, floats, strings (or, for a few, dicts) by field."""
        ...

    async def mget(self, keys: Key | Sequence[Key], *args: Key) -> list[bytes | None]: ...
    async def ping(self) -> bool: ...
    async def set(
        self,
        name: Key,
        value: Value,
        ex: int | None = None,
        px: int | None = None,
        nx: bool = False,
    ) -> bool | None: ...
    async def xread(
        self, streams: Mapping[str, str], count: int | None = None, block: int | None = None
    ) -> list[tuple[bytes, list[StreamEntry]]]:
        """Per stream read, ``(name, entries)`` (each pair a two-item list in fact)."""
        ...

    async def xrevrange(
        self, name: Key, max: Key = "+", min: Key = "-", count: int | None = None
    ) -> list[StreamEntry]: ...
    async def zadd(self, name: Key, mapping: Mapping[str, float]) -> int: ...
    async def zcard(self, name: Key) -> int: ...
    async def zrange(self, name: Key, start: int, end: int) -> list[bytes]: ...
    async def zrangebyscore(
        self,
        name: Key,
        min: float | str,
        max: float | str,
        start: int | None = None,
        num: int | None = None,
    ) -> list[bytes]: ...
    async def zrem(self, name: Key, *values: Value) -> int: ...
    async def zrevrange(self, name: Key, start: int, end: int) -> list[bytes]: ...


def typed(redis: Redis) -> AsyncRedisClient:
    """``redis`` as the commands it answers, typed (the same object: nothing runs)."""
    return cast(AsyncRedisClient, redis)


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
    client = typed(redis)
    try:
        return await client.evalsha(script_sha(source), len(keys), *keys, *args)
    except NoScriptError:
        return await client.eval(source, len(keys), *keys, *args)


async def run_lua_batch(redis: Redis, calls: Sequence[LuaCall]) -> list[Any]:
    """Run several scripts in one round trip (each atomic on its own, in order).

    A script Redis does not know yet answers NOSCRIPT without running, so it is simply run
    again on its own through ``run_lua``."""
    async with typed(redis).pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(script_sha(call.source), len(call.keys), *call.keys, *call.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    for i, (call, result) in enumerate(zip(calls, results, strict=True)):
        if isinstance(result, NoScriptError):
            results[i] = await run_lua(redis, call.source, call.keys, call.args)
        elif isinstance(result, Exception):
            raise result
    return results


def text(value: object) -> str:
    """Redis reply (bytes or str) to str."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
