"""A command whose answer a broken connection cut off, on a Sentinel-managed connection: inside
a job it is not sent again (``CommandOutcomeUnknown``), outside it the retry policy rides the
break out. Against real Redis; the "master" the Sentinels would name is the test Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlparse

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from pipeline.runtime.connection import (
    NO_REPLAY,
    CommandOutcomeUnknown,
    FailoverConnection,
    ride_out,
)
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration


class LocalMaster:
    """Stands in for a SentinelConnectionPool: the Sentinels name the test Redis."""

    is_master = True
    check_connection = False

    async def get_master_address(self) -> tuple[str, int]:
        parsed = urlparse(REDIS_URL)
        return parsed.hostname or "127.0.0.1", parsed.port or 6379


def failover_client(name: str) -> Redis:
    db = int(urlparse(REDIS_URL).path.strip("/") or 0)
    pool = ConnectionPool(
        connection_class=FailoverConnection,
        connection_pool=LocalMaster(),
        db=db,
        client_name=name,
        retry=ride_out(3),
        retry_on_error=[RedisConnectionError],
    )
    return Redis(connection_pool=pool)


async def cut_connection_of(admin: Redis, name: str) -> None:
    """Kill the connection named ``name`` once it blocks in BLPOP."""
    for _ in range(100):
        clients: list[dict[str, Any]] = await admin.client_list()
        blocked = [c for c in clients if c.get("name") == name and c.get("cmd") == "blpop"]
        if blocked:
            await admin.client_kill_filter(_id=blocked[0]["id"])
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no connection named {name} blocked in BLPOP")


async def test_a_command_cut_off_inside_a_job_is_not_sent_again(redis: Redis) -> None:
    name, key = f"noreplay-{uuid.uuid4().hex[:8]}", f"test:noreplay:{uuid.uuid4().hex}"
    client = failover_client(name)
    token = NO_REPLAY.set(True)
    try:
        with pytest.raises(CommandOutcomeUnknown):
            await asyncio.gather(client.blpop([key], timeout=5), cut_connection_of(redis, name))
    finally:
        NO_REPLAY.reset(token)
        await client.aclose()


async def test_outside_a_job_a_cut_off_command_is_retried(redis: Redis) -> None:
    name, key = f"replay-{uuid.uuid4().hex[:8]}", f"test:replay:{uuid.uuid4().hex}"
    client = failover_client(name)

    async def cut_then_push() -> None:
        await cut_connection_of(redis, name)
        await asyncio.sleep(0.3)  # the retried BLPOP is waiting again
        await redis.rpush(key, b"there")

    try:
        popped, _ = await asyncio.gather(client.blpop([key], timeout=5), cut_then_push())
        assert popped == (key.encode(), b"there")
    finally:
        await redis.delete(key)
        await client.aclose()
