"""How the library's scripts run: registered per client, EVALSHA first, several per trip.

A :class:`LuaScript` is one script's final source (its shared fragments joined, its constants
filled in), named and listed in :data:`SCRIPTS` when its module loads. It runs on a client
through that client's :class:`LuaLibrary` (:func:`library`): redis-py's ``register_script``
gives each script's SHA1 (by the client's encoder) once per client, on first use, and the
library is kept on the client itself, so it lives as long as the client and nothing is hashed
again per call.

A run is ``EVALSHA``; a Redis that does not know the script yet (restarted, failed over,
flushed) answers NOSCRIPT without running it, and the script is then sent whole with
``EVAL``, which also caches it: two round trips once per script and server, one after. (Not
``AsyncScript.__call__``, whose fallback is ``SCRIPT LOAD`` then ``EVALSHA`` — three round
trips — and which inside a pipeline first asks ``SCRIPT EXISTS`` on every ``execute``.)
:func:`run_lua_batch` sends several runs in one round trip the same way.

Each topic module's typed wrappers take and return plain values; :func:`integer`,
:func:`string` and :func:`table` read a reply's parts (a reply of another shape is a
``TypeError``: the script and its wrapper disagree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeAlias, TypeVar

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from pipeline.state.redisio import LuaReply, typed

T = TypeVar("T")
#: A KEYS or ARGV entry (redis-py sends numbers as their decimal text).
LuaArg: TypeAlias = str | bytes | int | float

#: Every script of the library, by name (filled as the topic modules load; importing
#: ``pipeline.state.lua`` loads them all).
SCRIPTS: dict[str, LuaScript] = {}

#: Where a client keeps its :class:`LuaLibrary`.
_ATTRIBUTE: Final = "_plantpipe_lua"


@dataclass(frozen=True, eq=False)
class LuaScript:
    """One script of the library: a name (unique) and its final source."""

    name: str
    source: str

    def __post_init__(self) -> None:
        if self.name in SCRIPTS:
            raise ValueError(f"two Lua scripts named {self.name!r}")
        SCRIPTS[self.name] = self

    async def run(self, redis: Redis, keys: Sequence[str], args: Sequence[LuaArg] = ()) -> LuaReply:
        """Run atomically on ``redis`` (see the module docstring)."""
        return await library(redis).run(self, keys, args)

    def call(
        self, keys: Sequence[str], args: Sequence[LuaArg], parse: Callable[[LuaReply], T]
    ) -> LuaCall[T]:
        """This script's run as a value, its reply read by ``parse`` (to batch it)."""
        return LuaCall(self, tuple(keys), tuple(args), parse)


@dataclass(frozen=True)
class LuaCall(Generic[T]):
    """One script run as a value: several share a round trip in :func:`run_lua_batch`."""

    script: LuaScript
    keys: tuple[str, ...]
    args: tuple[LuaArg, ...]
    parse: Callable[[LuaReply], T]

    async def run(self, redis: Redis) -> T:
        """Run it alone."""
        return self.parse(await self.script.run(redis, self.keys, self.args))


class LuaLibrary:
    """The library's scripts registered with one client (:func:`library` gives it)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._client = typed(redis)
        self._registered: dict[str, AsyncScript] = {}

    def sha(self, script: LuaScript) -> str:
        """The SHA1 this client's Redis knows ``script`` by (registered on first use)."""
        found = self._registered.get(script.name)
        if found is None:
            found = self._registered[script.name] = self._redis.register_script(script.source)
        return found.sha

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[LuaArg]) -> LuaReply:
        """EVALSHA, and EVAL (which caches it) when Redis does not know the script yet."""
        try:
            return await self._client.evalsha(self.sha(script), len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.eval(script.source, len(keys), *keys, *args)


def library(redis: Redis) -> LuaLibrary:
    """The library registered with ``redis``: made on the first call, then kept on the client."""
    found = getattr(redis, _ATTRIBUTE, None)
    if not isinstance(found, LuaLibrary):
        found = LuaLibrary(redis)
        setattr(redis, _ATTRIBUTE, found)
    return found


async def run_lua_batch(redis: Redis, calls: Sequence[LuaCall[T]]) -> list[T]:
    """Run several scripts in one round trip (each atomic on its own, in order); their
    replies, each read by its call's ``parse``.

    A script Redis does not know yet answers NOSCRIPT without running, so it is simply run
    again on its own (EVALSHA, then EVAL). Any other error is raised once the replies
    before it are read."""
    lua = library(redis)
    async with typed(redis).pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(lua.sha(call.script), len(call.keys), *call.keys, *call.args)
        replies = await pipe.execute(raise_on_error=False)
    results: list[T] = []
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, NoScriptError):
            results.append(call.parse(await lua.run(call.script, call.keys, call.args)))
        elif isinstance(reply, Exception):
            raise reply
        else:
            results.append(call.parse(reply))
    return results


def integer(reply: LuaReply) -> int:
    """A reply that is a number (a Lua number, or a number Redis gave the script as text)."""
    if isinstance(reply, int):
        return reply
    if isinstance(reply, bytes):
        return int(reply)
    raise TypeError(f"Lua reply {reply!r} is not a number")


def string(reply: LuaReply) -> str:
    """A reply that is a string (or a number, as its text)."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, int):
        return str(reply)
    raise TypeError(f"Lua reply {reply!r} is not a string")


def table(reply: LuaReply) -> list[LuaReply]:
    """A reply that is a Lua table (an array)."""
    if isinstance(reply, list):
        return reply
    raise TypeError(f"Lua reply {reply!r} is not a table")
