"""Writes that must outlive a Sentinel failover: wait until replicas hold them.

Redis replicates asynchronously: a master killed a moment after it acknowledged a write may
take the write with it when Sentinel promotes a replica. ``WAIT`` blocks until replicas have
acknowledged a connection's writes; :func:`replicated` makes that hold for writes made over
any connection of a pool, by writing a marker on the connection that waits — the replication
stream is one ordered log, so a replica that holds the marker holds every write acknowledged
before it."""

from __future__ import annotations

from typing import Any

from pipeline.settings import Settings
from pipeline.state.keys import Keys

MARKER_TTL_MS = 60_000


def replica_acks(settings: Settings) -> int:
    """Replicas a write that must outlive a failover waits for: ``redis_replica_acks``, or
    when unset 1 under a Sentinel URL and 0 (no wait) otherwise."""
    if settings.redis_replica_acks is not None:
        return settings.redis_replica_acks
    return 1 if settings.redis_url.startswith("redis+sentinel://") else 0


async def master_id(redis: Any) -> str:
    """The master's replication id: it changes when a replica is promoted (and when a master
    restarts), so writes made between two equal readings all went to one master."""
    info = await redis.info("replication")
    return str(info["master_replid"])


async def replicated(redis: Any, keys: Keys, replicas: int, timeout_s: float) -> tuple[int, str]:
    """Wait (at most ``timeout_s``) until ``replicas`` replicas hold every write this master
    acknowledged so far; returns how many do (fewer on a timeout) and the master's
    replication id (:func:`master_id`), read on the same connection after the wait."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.replication_marker, "1", px=MARKER_TTL_MS)
        pipe.execute_command("WAIT", replicas, max(1, int(timeout_s * 1000)))
        pipe.info("replication")
        _, acked, info = await pipe.execute()
    return int(acked), str(info["master_replid"])


class MasterChanged(Exception):
    """The Redis master changed while a job wrote (a Sentinel failover): writes the old
    master acknowledged may be gone, so the job must run again before it counts as done."""


async def keep_writes(redis: Any, keys: Keys, replicas: int, timeout_s: float, before: str) -> int:
    """After a job's writes: wait for ``replicas`` replicas to hold them; raise
    :class:`MasterChanged` when the master is no longer the one ``before`` names (read
    with :func:`master_id` when the job started). Returns the replicas that hold them
    (fewer than asked on a timeout: kept on the master alone, nothing lost)."""
    acked, now = await replicated(redis, keys, replicas, timeout_s)
    if now != before:
        raise MasterChanged(f"Redis master changed during the job ({before[:8]} -> {now[:8]})")
    return acked
