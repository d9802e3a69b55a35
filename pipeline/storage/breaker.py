"""An async circuit breaker whose state lives in Redis, shared by every io worker process.

closed ──(fail_max consecutive failures)──▶ open ──(reset_s elapsed)──▶ half_open
  ▲                                                                       │
  └────────────── trial call succeeds ◀── one trial call allowed ─────────┘ (fails → open)

Every transition runs in one Lua script (``pipeline.state.lua.breaker``) using Redis' clock,
so workers on different hosts agree. While open, callers are told how long to wait: uploads
are *deferred*, never dropped.

Hot path: while the breaker is closed with no failures counted, each process trusts that view
for ``LOCAL_VIEW_S`` (250 ms) — ``allow`` and ``record_success`` then cost no Redis round trip.
Any failure recorded by this process drops the view at once; one recorded by another process
is seen within 250 ms.
Only transient failures (timeouts, 5xx, connection errors) should be recorded: a 403 says
nothing about S3's health.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from pipeline.settings import Settings
from pipeline.state.keys import Keys
from pipeline.state.lua import breaker as lua
from pipeline.state.redisio import text, typed

State = Literal["closed", "open", "half_open"]

LOCAL_VIEW_S = 0.25


@dataclass(frozen=True)
class Permit:
    allowed: bool
    state: State
    wait_s: float


class RedisCircuitBreaker:
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        name: str = "s3",
        trial_timeout_s: float | None = None,
    ) -> None:
        self._redis = redis
        self._client = typed(redis)
        self.key = Keys.from_settings(settings).breaker(name)
        self.fail_max = settings.breaker_fail_max
        self.reset_ms = int(settings.breaker_reset_s * 1000)
        trial = trial_timeout_s or settings.s3_read_timeout_s + settings.s3_connect_timeout_s
        self.trial_ms = int(trial * 1000)
        self._clean_until = 0.0  # monotonic time until which "closed, 0 failures" is trusted
        self._asking: asyncio.Future[Permit] | None = None  # an allow() question on its way

    def trusted_closed(self) -> bool:
        """True while this process' recent view is "closed, no failures" (no Redis call)."""
        return time.monotonic() < self._clean_until

    async def refresh(self) -> bool:
        """Whether the breaker is closed with no failures, re-read from Redis (one HMGET, no
        trial granted) when this process' view has lapsed."""
        if not self.trusted_closed():
            state, failures = await self._client.hmget(self.key, "state", "failures")
            if _state(state or b"closed") == "closed" and int(failures or 0) == 0:
                self._clean_until = time.monotonic() + LOCAL_VIEW_S
        return self.trusted_closed()

    async def allow(self) -> Permit:
        """May a call go to S3 now? If not, ``wait_s`` says when to ask again.

        Callers that ask while another's question is on its way wait for that answer and
        share it when it is "closed" (everyone may go): a batch of 50 uploads whose local
        view lapsed costs one script run, not 50. Any other answer is the asker's own (a
        half-open breaker grants its one trial call to one caller only)."""
        if self.trusted_closed():
            return Permit(True, "closed", 0.0)
        pending = self._asking
        if pending is not None:
            permit = await asyncio.shield(pending)
            if permit.state == "closed":
                return permit
        task = asyncio.ensure_future(self._ask())
        self._asking = task
        try:
            return await asyncio.shield(task)
        finally:
            if self._asking is task:
                self._asking = None

    async def _ask(self) -> Permit:
        answer = await lua.allow(
            self._redis, self.key, reset_ms=self.reset_ms, trial_ms=self.trial_ms
        )
        permit = Permit(answer.allowed, _state(answer.state), max(0.0, answer.wait_ms / 1000))
        if permit.state == "closed" and answer.failures == 0:
            self._clean_until = time.monotonic() + LOCAL_VIEW_S
        return permit

    async def record_failure(self) -> State:
        self._clean_until = 0.0
        state, _ = await lua.record_failure(self._redis, self.key, fail_max=self.fail_max)
        return _state(state)

    async def record_success(self) -> State:
        """Returns the state *before* the success closed the breaker."""
        if self.trusted_closed():
            return "closed"  # nothing to reset
        before = await lua.record_success(self._redis, self.key)
        self._clean_until = time.monotonic() + LOCAL_VIEW_S  # closed, 0 failures: as just set
        return _state(before)

    async def state(self) -> State:
        raw = await self._client.hget(self.key, "state")
        return _state(raw or b"closed")

    async def failures(self) -> int:
        raw = await self._client.hget(self.key, "failures")
        return int(raw or 0)

    async def reset(self) -> None:
        self._clean_until = 0.0
        await self._client.delete(self.key)


def _state(raw: bytes | str) -> State:
    value = text(raw)
    if value not in ("closed", "open", "half_open"):
        raise ValueError(f"unknown breaker state {value!r}")
    return value  # type: ignore[return-value]
