"""Room in Redis for new work: a producer parks photo bytes in Redis (blobs) until the workers
are done with them, so a burst of large photos can fill Redis to ``maxmemory``. With
``noeviction`` Redis then refuses every write (OOM) — the workers' too, which need a little
room to finish what is in flight. :func:`check_room` refuses new work before that: a session
is accepted only while Redis' used memory plus the new photos stays under
``PLANTPIPE_REDIS_SUBMIT_MAX_USED`` of ``maxmemory`` (the rest is the workers' headroom)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from pipeline.errors import TransientError
from pipeline.state.redisio import typed

#: Bytes a session's records, events and jobs take besides its photos (generous).
SESSION_OVERHEAD = 64 * 1024


class RedisFull(TransientError):
    """Redis has no room for new work now; retrying later (once work drains) may help."""

    code = "redis_full"


async def memory_use(redis: Redis) -> tuple[int, int]:
    """(used_memory, maxmemory) in bytes; maxmemory 0 = no limit."""
    info = await typed(redis).info("memory")
    return int(info["used_memory"]), int(info.get("maxmemory", 0))


async def check_room(redis: Redis, incoming: int, max_used: float) -> None:
    """Raise :class:`RedisFull` when ``incoming`` more bytes would take Redis past
    ``max_used`` (a share) of its ``maxmemory``. No limit set: always room."""
    used, limit = await memory_use(redis)
    if limit <= 0:
        return
    allowed = int(limit * max_used)
    if used + incoming + SESSION_OVERHEAD > allowed:
        raise RedisFull(
            f"Redis has no room for this session now: {used / 2**20:.1f} MiB used of "
            f"{limit / 2**20:.1f} MiB maxmemory, new work may fill {max_used:.0%} of it "
            f"(PLANTPIPE_REDIS_SUBMIT_MAX_USED) and these photos need "
            f"{incoming / 2**20:.1f} MiB; try again once running sessions finish, or give "
            "Redis more memory"
        )


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write because it is at ``maxmemory`` (``OOM command not allowed``)."""
    return isinstance(exc, OutOfMemoryError) or "OOM command not allowed" in str(exc)
