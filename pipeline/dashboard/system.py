"""The system page's data: each role's queue (waiting, scheduled, running), the live workers
(from the registry), the S3 circuit breaker, Redis' memory and eviction policy."""

from __future__ import annotations

import time
from typing import Any

from arq.constants import in_progress_key_prefix

from pipeline.client import PipelineClient
from pipeline.runtime.health import redis_eviction_policy
from pipeline.runtime.registry import list_workers
from pipeline.state.lua.queues import queue_counts
from pipeline.state.redisio import text, typed
from pipeline.storage.breaker import RedisCircuitBreaker

ROLES = ("io", "cpu", "gpu")
QUEUE_SCAN = 10_000  # jobs looked at per queue; beyond this the split is of the first ones


async def queue_stats(client: PipelineClient) -> list[dict[str, Any]]:
    rows = []
    now_ms = int(time.time() * 1000)
    for role in ROLES:
        name = getattr(client.queues, role)
        counts = await queue_counts(
            client.redis,
            name,
            in_progress_prefix=in_progress_key_prefix,
            now_ms=now_ms,
            scan=QUEUE_SCAN,
        )
        rows.append(
            {
                "role": role,
                "queue": name,
                "jobs": counts.total,
                "waiting": counts.waiting,
                "scheduled": counts.scheduled,
                "running": counts.running,
                "partial": counts.total > QUEUE_SCAN,
            }
        )
    return rows


async def redis_info(client: PipelineClient) -> dict[str, Any]:
    redis = typed(client.redis)
    memory = await redis.info("memory")
    server = await redis.info("server")
    clients = await redis.info("clients")
    policy = await redis_eviction_policy(client.redis)
    maxmemory = int(memory.get("maxmemory", 0) or 0)
    used = int(memory.get("used_memory", 0) or 0)
    return {
        "version": text(server.get("redis_version", "")),
        "uptime_s": int(server.get("uptime_in_seconds", 0) or 0),
        "used_memory": used,
        "used_memory_human": text(memory.get("used_memory_human", "")),
        "peak_memory_human": text(memory.get("used_memory_peak_human", "")),
        "maxmemory": maxmemory,
        "maxmemory_human": text(memory.get("maxmemory_human", "")) if maxmemory else "no limit",
        "used_share": round(used / maxmemory, 4) if maxmemory else None,
        "policy": policy,
        "policy_ok": policy == "noeviction",
        "connected_clients": int(clients.get("connected_clients", 0) or 0),
    }


async def breaker_state(client: PipelineClient) -> dict[str, Any]:
    breaker = RedisCircuitBreaker(client.redis, client.settings)
    raw = await typed(client.redis).hgetall(breaker.key)
    fields = {text(k): text(v) for k, v in raw.items()}
    opened_ms = int(fields.get("opened_at", "0") or 0)
    return {
        "state": fields.get("state", "closed"),
        "failures": int(fields.get("failures", "0") or 0),
        "fail_max": breaker.fail_max,
        "reset_s": breaker.reset_ms / 1000,
        "opened_count": int(fields.get("opened_count", "0") or 0),
        "opened_at": opened_ms / 1000 if opened_ms else None,
    }


async def system_view(client: PipelineClient) -> dict[str, Any]:
    workers = await list_workers(client.redis, client.settings)
    now = time.time()
    queues = await queue_stats(client)
    for row in queues:
        row["workers"] = sum(w.role == row["role"] for w in workers)
    return {
        "prefix": client.settings.key_prefix,
        "queues": queues,
        "workers": [
            {
                "role": w.role,
                "host": w.host,
                "pid": w.pid,
                "worker_id": w.worker_id,
                "up_s": round(now - w.started_at),
                "seen_s_ago": round(now - w.seen_at, 1),
                "detail": w.detail,
            }
            for w in workers
        ],
        "breaker": await breaker_state(client),
        "redis": await redis_info(client),
        "dead_letters": await typed(client.redis).zcard(client.keys.dead_letter_order),
    }
