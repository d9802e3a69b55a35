"""The Lua library (``pipeline/state/lua/``) without a Redis server: its scripts are whole
(every shared fragment a script calls is joined in, every constant filled in), each is
registered once per client, a batch is one round trip with the NOSCRIPT fallback, and the
typed wrappers read the replies Redis gives. ``tests/unit/test_lua_on_redis.py`` runs
every script on a real (private) Redis."""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import re
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from pipeline.state import lua
from pipeline.state.keys import Keys
from pipeline.state.lua import breaker, joins, queues, sessions
from pipeline.state.lua.library import SCRIPTS, LuaScript, library, run_lua_batch
from pipeline.state.redisio import LuaReply

#: The fragments scripts share: a script that calls one must define it.
FRAGMENTS = ("to_feed", "check_ready", "now_ms")


def scripts_in_modules() -> dict[str, LuaScript]:
    found: dict[str, LuaScript] = {}
    for info in pkgutil.iter_modules(lua.__path__, prefix="pipeline.state.lua."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, LuaScript):
                found[value.name] = value
    return found


def test_scripts_names_every_script_of_the_package() -> None:
    assert scripts_in_modules() == SCRIPTS
    assert len(SCRIPTS) == 13
    assert len({s.source for s in SCRIPTS.values()}) == len(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_script_is_whole(name: str) -> None:
    source = SCRIPTS[name].source
    assert "redis.call(" in source
    for placeholder in ("MAXLEN_N", "FEED_N"):
        assert placeholder not in source, f"{name}: {placeholder} not filled in"
    for fragment in FRAGMENTS:
        calls = re.findall(rf"(?<!function ){fragment}\(", source)
        if calls:
            assert f"local function {fragment}(" in source, f"{name} calls {fragment} undefined"


def test_each_client_registers_a_script_once() -> None:
    first, second = Redis(), Redis()  # no connection is made
    registered: list[str] = []
    register = first.register_script

    def counted(script: Any) -> Any:
        registered.append(script)
        return register(script)

    first.register_script = counted  # type: ignore[method-assign]
    script = sessions.TRANSITION
    assert library(first) is library(first)
    assert library(second) is not library(first)
    sha = hashlib.sha1(script.source.encode()).hexdigest()
    assert library(first).sha(script) == sha == library(second).sha(script)
    assert library(first).sha(script) == sha
    assert registered == [script.source]


class FakeRedis:
    """Answers EVALSHA/EVAL as Redis does: NOSCRIPT for a script it has not been sent whole;
    a known script's reply is ``reply(source, keys, args)``."""

    def __init__(self, known: Sequence[LuaScript] = (), reply: Any = None) -> None:
        self.known = {hashlib.sha1(s.source.encode()).hexdigest(): s.source for s in known}
        self.sent: list[str] = []
        self.trips = 0
        self.reply = reply or (lambda source, keys, args: len(keys) + len(args))

    def register_script(self, source: str) -> Any:
        return SimpleNamespace(sha=hashlib.sha1(source.encode()).hexdigest())

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    def answer(self, sha: str, numkeys: int, keys_and_args: tuple[Any, ...]) -> Any:
        if sha not in self.known:
            return NoScriptError("NOSCRIPT No matching script.")
        keys, args = keys_and_args[:numkeys], keys_and_args[numkeys:]
        return self.reply(self.known[sha], keys, args)

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.trips += 1
        self.sent.append("EVALSHA")
        reply = self.answer(sha, numkeys, keys_and_args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def eval(self, source: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.trips += 1
        self.sent.append("EVAL")
        sha = hashlib.sha1(source.encode()).hexdigest()
        self.known[sha] = source
        return self.answer(sha, numkeys, keys_and_args)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[tuple[str, int, tuple[Any, ...]]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> FakePipeline:
        self.queued.append((sha, numkeys, keys_and_args))
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        assert not raise_on_error
        self.redis.trips += 1
        self.redis.sent.append(f"PIPELINE x{len(self.queued)}")
        return [self.redis.answer(*queued) for queued in self.queued]


def fake(redis: FakeRedis) -> Redis:
    return cast(Redis, redis)


async def test_a_batch_is_one_round_trip_once_redis_knows_the_scripts() -> None:
    keys = Keys("t")
    redis = FakeRedis(known=[lua.blobs.RELEASE])
    calls = [lua.blobs.release_call(keys, f"{n:064x}", "holder") for n in range(3)]
    assert await run_lua_batch(fake(redis), calls) == [3, 3, 3]  # 2 keys + 1 arg each
    assert redis.sent == ["PIPELINE x3"] and redis.trips == 1


async def test_a_script_redis_does_not_know_is_run_again_alone_with_eval() -> None:
    keys = Keys("t")
    redis = FakeRedis(known=[lua.blobs.RELEASE])
    calls = [
        lua.blobs.release_call(keys, "a" * 64, "h"),
        lua.artifacts.transition_call(
            keys, "art", "uploaded", session_id=None, error_code=None, reason=None,
            etag="e", now="now", ttl=60,
        ),
        lua.blobs.release_call(keys, "b" * 64, "h"),
    ]  # fmt: skip
    redis.reply = lambda source, keys, args: [1, 0] if "check_ready" in source else 0
    assert await run_lua_batch(fake(redis), calls) == [0, (1, False), 0]
    assert redis.sent == ["PIPELINE x3", "EVALSHA", "EVAL"]
    redis.sent.clear()
    assert await run_lua_batch(fake(redis), calls) == [0, (1, False), 0]
    assert redis.sent == ["PIPELINE x3"]  # cached by the EVAL


async def test_a_batch_raises_an_error_reply() -> None:
    redis = FakeRedis(known=[lua.blobs.RELEASE])
    redis.reply = lambda source, keys, args: ResponseError("WRONGTYPE")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await run_lua_batch(fake(redis), [lua.blobs.release_call(Keys("t"), "a" * 64, "h")])


async def test_a_single_run_falls_back_to_eval_once() -> None:
    redis = FakeRedis()
    assert await lua.blobs.hold(fake(redis), Keys("t"), "a" * 64, ["x", "y"]) == 4
    assert await lua.blobs.hold(fake(redis), Keys("t"), "a" * 64, ["x"]) == 3
    assert redis.sent == ["EVALSHA", "EVAL", "EVALSHA"]


def replying(reply: LuaReply) -> Redis:
    return fake(FakeRedis(known=list(SCRIPTS.values()), reply=lambda *_: reply))


async def test_wrappers_read_the_replies_redis_gives() -> None:
    keys = Keys("t")
    claimed = await queues.claim_jobs(
        replying([b"job-a", b"1700000000123", b"job-b", b"12.0"]),
        "arq:queue", [b"job-a", b"job-b"], in_progress_prefix="arq:in-progress:",
        now_ms=1, ttl_ms=2, want=2,
    )  # fmt: skip
    assert claimed == [("job-a", 1700000000123), ("job-b", 12)]
    assert await queues.queue_counts(
        replying([5, 2, 1, 2]), "q", in_progress_prefix="p", now_ms=1, scan=10
    ) == queues.QueueCounts(5, 2, 1, 2)
    report = await joins.report(replying([1, 2, 3]), keys, "j", "c", "{}", now=1.5, ttl=60)
    assert report == joins.Reported(True, 2, 3)
    assert await sessions.transition(
        replying([-1, b""]), keys, "s", "failed", reason="", stage="", now="n", ttl=1
    ) == (-1, "")
    assert await sessions.transition(
        replying([-2, b"completed"]), keys, "s", "failed", reason="", stage="", now="n", ttl=1
    ) == (-2, "completed")
    closed = await breaker.allow(replying([1, b"closed", 0, 0]), "b", reset_ms=1, trial_ms=1)
    assert closed == breaker.Answer(True, "closed", 0, 0)
    half = await breaker.allow(replying([0, b"half_open", 250]), "b", reset_ms=1, trial_ms=1)
    assert half == breaker.Answer(False, "half_open", 250, None)
    assert await breaker.record_failure(replying([b"open", 5]), "b", fail_max=5) == ("open", 5)
    assert await breaker.record_success(replying(b"half_open"), "b") == "half_open"
    assert await lua.listing.summaries(replying(b"[]"), keys, ["gone"]) == []


async def test_a_reply_of_another_shape_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a table"):
        await queues.queue_counts(replying(7), "q", in_progress_prefix="p", now_ms=1, scan=1)
