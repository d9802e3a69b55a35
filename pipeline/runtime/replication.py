"""Writes that must outlive a Sentinel failover: wait until replicas hold them.

Redis replicates asynchronously: a master killed a moment after it acknowledged a write may
take the write with it when Sentinel promotes a replica. ``WAIT`` blocks until replicas have
acknowledged a connection's writes; :func:`replicated` makes that hold for writes made over
any connection of a pool, by writing a marker on the connection that waits — the replication
stream is one ordered log, so a replica that holds the marker holds every write acknowledged
before it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from pipeline.errors import PermanentError
from pipeline.runtime.retry import retry_delay
from pipeline.settings import Settings
from pipeline.state.keys import Keys
from pipeline.state.redisio import typed

MARKER_TTL_MS = 60_000


def replica_acks(settings: Settings) -> int:
    """Replicas a write that must outlive a failover waits for: ``redis_replica_acks``, or
    when unset 1 under a Sentinel URL and 0 (no wait) otherwise."""
    if settings.redis_replica_acks is not None:
        return settings.redis_replica_acks
    return 1 if settings.redis_url.startswith("redis+sentinel://") else 0


#: How long after this process saw the master change a failure that a failover's lost
#: writes can explain (``PermanentError.may_follow_failover``) is retried first: the job that
#: made those writes re-runs within seconds of the failover and restores them.
FAILOVER_DOUBT_S = 120.0


@dataclass
class FailoverClock:
    """When this process last saw the Redis master change (fed every replication reading).

    A job can meet a failover's loss without its own master changing under it: a ``submit``
    whose master changed writes its session again on the new one, and the jobs it had queued
    can run before their photos are back; a producer job interrupted by the failover re-runs
    and stores its blobs again. Right after a failover such a failure is worth a retry."""

    replid: str | None = None
    changed_at: float = -math.inf

    def note(self, info: dict[str, Any]) -> str:
        """Record one ``INFO replication`` reading; returns the master's replication id."""
        replid = str(info["master_replid"])
        if self.replid is None:
            # First reading of this process: a master promoted from a replica names its old
            # replication id (second_repl_offset is set) — it may have just failed over.
            if int(info.get("second_repl_offset", -1)) != -1:
                self.changed_at = time.monotonic()
        elif replid != self.replid:
            self.changed_at = time.monotonic()
        self.replid = replid
        return replid

    def recent(self, within_s: float = FAILOVER_DOUBT_S) -> bool:
        """Whether the master changed less than ``within_s`` ago (as this process saw it)."""
        return time.monotonic() - self.changed_at < within_s


#: This process's clock: a worker process talks to one Redis deployment.
FAILOVERS = FailoverClock()


async def master_id(redis: Redis) -> str:
    """The master's replication id: it changes when a replica is promoted (and when a master
    restarts), so writes made between two equal readings all went to one master."""
    return FAILOVERS.note(await typed(redis).info("replication"))


async def replicated(redis: Redis, keys: Keys, replicas: int, timeout_s: float) -> tuple[int, str]:
    """Wait (at most ``timeout_s``) until ``replicas`` replicas hold every write this master
    acknowledged so far; returns how many do (fewer on a timeout) and the master's
    replication id (:func:`master_id`), read on the same connection after the wait."""
    async with typed(redis).pipeline(transaction=False) as pipe:
        pipe.set(keys.replication_marker, "1", px=MARKER_TTL_MS)
        pipe.execute_command("WAIT", replicas, max(1, int(timeout_s * 1000)))
        pipe.info("replication")
        _, acked, info = await pipe.execute()
    return int(acked), FAILOVERS.note(info)


class MasterChanged(Exception):
    """The Redis master changed while a job wrote (a Sentinel failover): writes the old
    master acknowledged may be gone, so the job must run again before it counts as done."""


async def keep_writes(
    redis: Redis, keys: Keys, replicas: int, timeout_s: float, before: str
) -> int:
    """After a job's writes: wait for ``replicas`` replicas to hold them; raise
    :class:`MasterChanged` when the master is no longer the one ``before`` names (read
    with :func:`master_id` when the job started). Returns the replicas that hold them
    (fewer than asked on a timeout: kept on the master alone, nothing lost)."""
    acked, now = await replicated(redis, keys, replicas, timeout_s)
    if now != before:
        raise MasterChanged(f"Redis master changed during the job ({before[:8]} -> {now[:8]})")
    return acked


def failover_retry_delay(settings: Settings, exc: BaseException, attempt: int) -> float | None:
    """The delay before another try of a permanent-looking failure that a recent failover's
    lost writes explain (``PermanentError.may_follow_failover``, e.g. a blob gone with the old
    master while the submit or job that wrote it is written again), or None: not such a
    failure, no failover lately, not under Sentinel (``replica_acks`` 0), or out of tries."""
    if not (isinstance(exc, PermanentError) and exc.may_follow_failover):
        return None
    if replica_acks(settings) == 0 or not FAILOVERS.recent():
        return None
    return retry_delay(settings, attempt)
