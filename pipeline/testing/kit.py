"""The pieces behind the pytest fixtures of :mod:`pipeline.testing` (usable without pytest)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from arq.worker import Worker

from pipeline.client import PipelineClient
from pipeline.embedded import drop_prefix
from pipeline.runtime.connection import quick_client
from pipeline.runtime.worker import ResilientWorker
from pipeline.settings import Settings

ROLES = ("io", "cpu", "gpu")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
DEFAULT_S3_ENDPOINT = "http://127.0.0.1:4566"
# LocalStack accepts any credentials; a real AWS chain, if configured, is left alone.
LOCALSTACK_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


class ServiceUnavailable(RuntimeError):
    """Redis or LocalStack is not there; the message says what to start."""


def redis_url_for_tests() -> str:
    return os.environ.get("PLANTPIPE_TEST_REDIS_URL", DEFAULT_REDIS_URL)


def s3_endpoint_for_tests() -> str:
    return os.environ.get("PLANTPIPE_TEST_S3_ENDPOINT", DEFAULT_S3_ENDPOINT)


def localstack_healthy(endpoint: str | None = None) -> bool:
    url = f"{endpoint or s3_endpoint_for_tests()}/_localstack/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = resp.read()
    except OSError:
        return False
    return b'"s3": "available"' in body or b'"s3": "running"' in body


async def redis_reachable(url: str | None = None) -> bool:
    try:
        client = await quick_client(url or redis_url_for_tests(), timeout_s=2.0)
    except Exception:
        return False
    await client.aclose()
    return True


def isolated_settings(**overrides: Any) -> Settings:
    """Settings for one test: own key prefix and bucket, quick retries and polling.

    Also sets LocalStack's dummy AWS credentials in the environment when none are set."""
    for name, value in LOCALSTACK_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    tag = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "redis_url": redis_url_for_tests(),
        "key_prefix": f"ppt{tag}",
        "storage": "s3",
        "s3_endpoint_url": s3_endpoint_for_tests(),
        "s3_bucket": f"ppt-{tag}",
        "s3_create_bucket": True,
        "retry_delays_s": [0.2, 0.4, 0.8],
        "breaker_reset_s": 2.0,
        "poll_delay_s": 0.02,
        "watchdog_interval_s": 1,
        "intra_op_threads": 1,
    }
    values.update(overrides)
    return Settings(**values)


async def check_services(settings: Settings) -> None:
    """Raise :class:`ServiceUnavailable` naming what to start when Redis or S3 is down."""
    if not await redis_reachable(settings.redis_url):
        raise ServiceUnavailable(
            f"Redis is not reachable at {settings.redis_url}: start one (`redis-server`, or "
            "`bash scripts/services.sh` in a plantpipe checkout) or set PLANTPIPE_TEST_REDIS_URL"
        )
    endpoint = settings.s3_endpoint_url
    if settings.storage == "s3" and endpoint is not None:
        healthy = await asyncio.to_thread(localstack_healthy, endpoint)
        if not healthy:
            raise ServiceUnavailable(
                f"LocalStack S3 is not reachable at {endpoint}: start it (see plantpipe's "
                "README, Services for tests) or set PLANTPIPE_TEST_S3_ENDPOINT"
            )


def role_options(role: str, settings: Settings) -> dict[str, Any]:
    """arq options of a role (``workers.<role>.worker_options``) for ``settings``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    module = importlib.import_module(f"workers.{role}")
    options: dict[str, Any] = module.worker_options(settings)
    return options


@asynccontextmanager
async def in_process_worker(
    options: dict[str, Any], settings: Settings, *, start_timeout: float = 120, **ctx: Any
) -> AsyncIterator[Worker]:
    """Run the worker every role runs (``ResilientWorker``: arq's Worker with batched claims,
    wake-ups and Redis ride-out) with ``options`` inside this event loop until the block
    ends. Returns once the role's startup has finished (models loaded for gpu)."""
    own_ctx = {**options.get("ctx", {}), "settings": settings, **ctx}  # one ctx per worker
    worker: Worker = ResilientWorker(**{**options, "ctx": own_ctx}, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    deadline = time.monotonic() + start_timeout
    try:
        while "started" not in worker.ctx:
            if task.done():
                task.result()  # raises the startup error
                raise RuntimeError("worker stopped during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker did not start in {start_timeout:.0f} s")
            await asyncio.sleep(0.02)
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(asyncio.CancelledError):
            await worker.close()


@asynccontextmanager
async def running_workers(
    settings: Settings, roles: Sequence[str] = ROLES
) -> AsyncIterator[dict[str, Worker]]:
    """The given roles as in-process workers (io first: it creates the bucket)."""
    async with AsyncExitStack() as stack:
        started: dict[str, Worker] = {}
        for role in roles:
            started[role] = await stack.enter_async_context(
                in_process_worker(role_options(role, settings), settings)
            )
        yield started


@asynccontextmanager
async def running_pipeline(
    settings: Settings | None = None, roles: Sequence[str] = ROLES, *, cleanup: bool = True
) -> AsyncIterator[PipelineClient]:
    """``async with running_pipeline() as client``: services checked, workers running in this
    loop, a connected client; afterwards the keys (and, with ``cleanup``, the bucket) go."""
    settings = settings or isolated_settings()
    await check_services(settings)
    try:
        async with running_workers(settings, roles), PipelineClient(settings) as client:
            yield client
    finally:
        if cleanup:
            await drop_keys(settings)
            await remove_bucket(settings)


async def drop_keys(settings: Settings) -> int:
    """Delete every Redis key of ``settings.key_prefix`` (arq's job keys of its sessions
    included). Returns how many went."""
    return await drop_prefix(settings.redis_url, settings.key_prefix)


async def remove_bucket(settings: Settings) -> None:
    """Empty and delete ``settings.s3_bucket`` (for test buckets only; missing is fine)."""
    if settings.storage != "s3":
        return
    import aioboto3
    from botocore.exceptions import ClientError

    session = aioboto3.Session()
    async with session.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region
    ) as s3:
        try:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=settings.s3_bucket):
                objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objects:
                    await s3.delete_objects(Bucket=settings.s3_bucket, Delete={"Objects": objects})
            await s3.delete_bucket(Bucket=settings.s3_bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchBucket", "404"):
                raise
