"""Live worker registry: each worker refreshes a heartbeat key; ``plantpipe workers`` lists them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from pipeline.settings import Settings
from pipeline.state.keys import Keys
from pipeline.state.redisio import text, typed

HEARTBEAT_S = 5.0
HEARTBEAT_TTL_S = 15


class WorkerInfo(BaseModel):
    role: str
    worker_id: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    detail: dict[str, Any] = {}


class Heartbeat:
    def __init__(self, redis: Redis, settings: Settings, role: str, **detail: Any) -> None:
        self._client = typed(redis)
        self._keys = Keys.from_settings(settings)
        now = time.time()
        self.info = WorkerInfo(
            role=role,
            worker_id=uuid.uuid4().hex[:12],
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=now,
            seen_at=now,
            detail=detail,
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        return self._keys.worker_heartbeat(self.info.role, self.info.worker_id)

    async def beat(self) -> None:
        self.info.seen_at = time.time()
        await self._client.set(self.key, self.info.model_dump_json(), ex=HEARTBEAT_TTL_S)

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):  # Redis blips must not kill the worker
                await self.beat()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._client.delete(self.key)


async def list_workers(redis: Redis, settings: Settings) -> list[WorkerInfo]:
    client = typed(redis)
    pattern = Keys.from_settings(settings).worker_heartbeat("*", "*")
    keys = [k async for k in client.scan_iter(match=pattern, count=500)]
    if not keys:
        return []
    raws = await client.mget(keys)
    found = [WorkerInfo.model_validate_json(text(r)) for r in raws if r is not None]
    return sorted(found, key=lambda w: (w.role, w.host, w.pid))
