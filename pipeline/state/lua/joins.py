"""The fan-in script (:class:`pipeline.runtime.joins.JoinStore`): a child's report, counted
once however often the child runs."""

from __future__ import annotations

from typing import NamedTuple

from redis.asyncio import Redis

from pipeline.state.keys import Keys
from pipeline.state.lua.library import LuaScript, integer, table

#: KEYS: join, its results, joins_open. ARGV: child id, report (JSON), now, join id, TTL.
#: Returns {1 counted now | 0 already, reports so far, expected}; {-1, 0, 0} when there is no
#: such join (expired or never created).
REPORT = LuaScript(
    "join_report",
    """
local join, results, open = KEYS[1], KEYS[2], KEYS[3]
local child, report, now, join_id = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ttl = tonumber(ARGV[5])
local expected = tonumber(redis.call('HGET', join, 'expected') or '-1')
if expected < 0 then return {-1, 0, 0} end
local counted = redis.call('HSETNX', results, child, report)
redis.call('EXPIRE', results, ttl)
local done = redis.call('HLEN', results)
if counted == 1 then
  redis.call('HSET', join, 'updated_at', now)
  if redis.call('HGET', join, 'completed') ~= '1' then redis.call('ZADD', open, now, join_id) end
end
return {counted, done, expected}
""",
)


class Reported(NamedTuple):
    """A report's outcome, as the script answers it: when there is no such join that is
    ``Reported(True, 0, 0)`` (the script's ``{-1, 0, 0}``, its -1 read as true)."""

    counted: bool
    """This report was the child's first (a re-run's is not counted again)."""
    done: int
    expected: int


async def report(
    redis: Redis, keys: Keys, join_id: str, child_id: str, outcome: str, *, now: float, ttl: int
) -> Reported:
    """Record child ``child_id``'s report (``outcome``, JSON) in join ``join_id``, once."""
    reply = table(
        await REPORT.run(
            redis,
            [keys.join(join_id), keys.join_results(join_id), keys.joins_open],
            [child_id, outcome, now, join_id, ttl],
        )
    )
    counted, done, expected = (integer(part) for part in reply)
    return Reported(bool(counted), done, expected)
