"""The circuit breaker's scripts (:class:`pipeline.storage.breaker.RedisCircuitBreaker`):
ask, record a failure, record a success — each one atomic step on Redis' clock."""

from __future__ import annotations

from typing import NamedTuple

from redis.asyncio import Redis

from pipeline.state.lua.library import LuaScript, integer, string, table

_NOW = """
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS: the breaker. ARGV: reset (ms), trial timeout (ms).
#: Returns {allowed, state, wait (ms)[, failures when closed]}.
ALLOW = LuaScript(
    "breaker_allow",
    "local function now_ms()" + _NOW + "end\n"
    """
local key = KEYS[1]
local reset_ms, trial_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local st = redis.call('HGET', key, 'state') or 'closed'
if st == 'closed' then
  return {1, 'closed', 0, tonumber(redis.call('HGET', key, 'failures') or '0')}
end
if st == 'open' then
  local opened = tonumber(redis.call('HGET', key, 'opened_at') or '0')
  local waited = now - opened
  if waited >= reset_ms then
    redis.call('HSET', key, 'state', 'half_open', 'trial_until', now + trial_ms)
    return {1, 'half_open', 0}
  end
  return {0, 'open', reset_ms - waited}
end
local trial_until = tonumber(redis.call('HGET', key, 'trial_until') or '0')
if now >= trial_until then
  redis.call('HSET', key, 'trial_until', now + trial_ms)
  return {1, 'half_open', 0}
end
return {0, 'half_open', trial_until - now}
""",
)

#: KEYS: the breaker. ARGV: failures that open it. Returns {state, failures}.
FAILURE = LuaScript(
    "breaker_failure",
    "local function now_ms()" + _NOW + "end\n"
    """
local key = KEYS[1]
local fail_max = tonumber(ARGV[1])
local st = redis.call('HGET', key, 'state') or 'closed'
if st == 'half_open' then
  redis.call('HSET', key, 'state', 'open', 'opened_at', now_ms())
  redis.call('HINCRBY', key, 'opened_count', 1)
  return {'open', tonumber(redis.call('HGET', key, 'failures') or '0')}
end
local n = redis.call('HINCRBY', key, 'failures', 1)
if st == 'closed' and n >= fail_max then
  redis.call('HSET', key, 'state', 'open', 'opened_at', now_ms())
  redis.call('HINCRBY', key, 'opened_count', 1)
  return {'open', n}
end
return {st, n}
""",
)

#: KEYS: the breaker. Returns the state before it closed.
SUCCESS = LuaScript(
    "breaker_success",
    """
local key = KEYS[1]
local st = redis.call('HGET', key, 'state') or 'closed'
redis.call('HSET', key, 'state', 'closed', 'failures', 0)
return st
""",
)


class Answer(NamedTuple):
    """The breaker's answer to "may a call go now?"."""

    allowed: bool
    state: str
    wait_ms: int
    failures: int | None
    """Failures counted, told only when the breaker is closed."""


async def allow(redis: Redis, key: str, *, reset_ms: int, trial_ms: int) -> Answer:
    """Ask breaker ``key`` (an open one turns half-open after ``reset_ms``; a half-open one
    grants one trial call per ``trial_ms``)."""
    allowed, state, wait_ms, *failures = table(await ALLOW.run(redis, [key], [reset_ms, trial_ms]))
    return Answer(
        bool(integer(allowed)),
        string(state),
        integer(wait_ms),
        integer(failures[0]) if failures else None,
    )


async def record_failure(redis: Redis, key: str, *, fail_max: int) -> tuple[str, int]:
    """Count a failure (``fail_max`` in a row open the breaker): ``(state, failures)``."""
    state, failures = table(await FAILURE.run(redis, [key], [fail_max]))
    return string(state), integer(failures)


async def record_success(redis: Redis, key: str) -> str:
    """Close the breaker; the state it had."""
    return string(await SUCCESS.run(redis, [key], []))
