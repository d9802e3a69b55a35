"""Scripts over arq's queues (a sorted set of job ids scored by when each is due, in ms, and
an in-progress key per running job): the worker's batched claim
(:class:`pipeline.runtime.worker.ResilientWorker`) and the dashboard's queue counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from redis.asyncio import Redis

from pipeline.state.lua.library import LuaScript, integer, string, table

# KEYS[1] queue; ARGV: in-progress key prefix, now (ms), in-progress TTL (ms), how many to
# claim at most, then candidate job ids. Returns {id, score, id, score, ...} of those claimed.
CLAIM = LuaScript(
    "queue_claim",
    """
local queue, prefix = KEYS[1], ARGV[1]
local now, ttl_ms, want = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local claimed = {}
for i = 5, #ARGV do
  if #claimed >= want * 2 then break end
  local id = ARGV[i]
  local score = redis.call('ZSCORE', queue, id)
  if score and tonumber(score) <= now
      and redis.call('SET', prefix .. id, '1', 'NX', 'PX', ttl_ms) then
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = score
  end
end
return claimed
""",
)

# KEYS[1]: the queue (arq's sorted set: score = when the job is due, in ms). ARGV: arq's
# in-progress key prefix, now (ms), how many jobs to look at.
# Returns {jobs in the queue, waiting (due, not running), scheduled (due later), running}.
COUNTS = LuaScript(
    "queue_counts",
    """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
local now = tonumber(ARGV[2])
local waiting, scheduled, running = 0, 0, 0
for i = 1, #ids, 2 do
  if redis.call('EXISTS', ARGV[1] .. ids[i]) == 1 then
    running = running + 1
  elseif tonumber(ids[i + 1]) > now then
    scheduled = scheduled + 1
  else
    waiting = waiting + 1
  end
end
return {redis.call('ZCARD', KEYS[1]), waiting, scheduled, running}
""",
)


async def claim_jobs(
    redis: Redis,
    queue: str,
    job_ids: Sequence[str | bytes],
    *,
    in_progress_prefix: str,
    now_ms: int,
    ttl_ms: int,
    want: int,
) -> list[tuple[str, int]]:
    """Claim up to ``want`` of ``job_ids`` that are due in ``queue`` and not running (their
    in-progress key set, for ``ttl_ms``): ``(job id, score)`` of each claimed, in order."""
    reply = table(
        await CLAIM.run(redis, [queue], [in_progress_prefix, now_ms, ttl_ms, want, *job_ids])
    )
    return [
        (string(job_id), int(float(string(score))))
        for job_id, score in zip(reply[::2], reply[1::2], strict=True)
    ]


class QueueCounts(NamedTuple):
    total: int
    """Jobs in the queue (all of them, not only those looked at)."""
    waiting: int
    scheduled: int
    running: int


async def queue_counts(
    redis: Redis, queue: str, *, in_progress_prefix: str, now_ms: int, scan: int
) -> QueueCounts:
    """The first ``scan`` jobs of ``queue``, split into waiting, scheduled and running."""
    reply = table(await COUNTS.run(redis, [queue], [in_progress_prefix, now_ms, scan]))
    total, waiting, scheduled, running = (integer(part) for part in reply)
    return QueueCounts(total, waiting, scheduled, running)
