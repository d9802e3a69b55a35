"""What a test run must leave as it found it: one line per LocalStack bucket and per Redis
key without a TTL (on the tests' Redis database), for ``scripts/test`` to compare before and
after the suite. ``python -m tests.inventory``; a service that is down lists nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.testing import localstack_healthy, redis_url_for_tests, s3_endpoint_for_tests


async def buckets() -> list[str]:
    endpoint = s3_endpoint_for_tests()
    if not localstack_healthy(endpoint):
        return []
    import aioboto3

    async with aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as s3:
        listed = await s3.list_buckets()
    return [f"bucket {b['Name']}" for b in listed.get("Buckets", [])]


async def permanent_keys() -> list[str]:
    from redis.asyncio import Redis

    client: Any = Redis.from_url(redis_url_for_tests(), socket_connect_timeout=2)
    found: list[str] = []
    try:
        async for key in client.scan_iter(count=1000):
            if await client.ttl(key) == -1:
                found.append(f"redis key {key.decode(errors='replace')}")
    except Exception:
        return []
    finally:
        await client.aclose()
    return found


async def main() -> None:
    for line in sorted(await buckets() + await permanent_keys()):
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
