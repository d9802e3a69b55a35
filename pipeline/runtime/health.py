"""Start-up checks shared by every role: Redis reachable and not evicting."""

from __future__ import annotations

from redis.asyncio import Redis

from pipeline.errors import ConfigurationError
from pipeline.state.redisio import text, typed


async def redis_eviction_policy(redis: Redis) -> str:
    """``maxmemory-policy`` via CONFIG GET, or INFO memory where CONFIG is disabled."""
    client = typed(redis)
    try:
        reply = await client.config_get("maxmemory-policy")
        if reply:
            value = reply.get("maxmemory-policy") or reply.get(b"maxmemory-policy")
            if value is not None:
                return text(value)
    except Exception:
        pass
    info = await client.info("memory")
    return text(info.get("maxmemory_policy", "unknown"))


async def check_redis(redis: Redis) -> None:
    """Refuse to run on a Redis that may evict queued work (the original's LRU broker bug)."""
    try:
        await typed(redis).ping()
    except Exception as exc:
        raise ConfigurationError(
            f"Redis is not reachable ({exc}); check PLANTPIPE_REDIS_URL", code="redis_unreachable"
        ) from exc
    policy = await redis_eviction_policy(redis)
    if policy != "noeviction":
        raise ConfigurationError(
            f"Redis maxmemory-policy is {policy!r}: queued jobs and blobs could be evicted and "
            "silently lost. Set `maxmemory-policy noeviction` (redis.conf or "
            "`CONFIG SET maxmemory-policy noeviction`) and restart the worker.",
            code="redis_evicting",
        )
