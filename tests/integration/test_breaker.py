"""The shared circuit breaker under many concurrent callers, against real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from pipeline.storage.breaker import Permit, RedisCircuitBreaker
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration


def counting_asks(breaker: RedisCircuitBreaker) -> list[Permit]:
    """Every answer the breaker fetched from Redis (one script run each)."""
    asked: list[Permit] = []
    ask = breaker._ask

    async def counted() -> Permit:
        permit = await ask()
        asked.append(permit)
        return permit

    breaker._ask = counted  # type: ignore[method-assign]
    return asked


async def test_a_lapsed_view_costs_one_script_run_for_fifty_callers(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    breaker = RedisCircuitBreaker(redis, make_settings())
    asked = counting_asks(breaker)
    permits = await asyncio.gather(*(breaker.allow() for _ in range(50)))
    assert all(p.allowed and p.state == "closed" for p in permits)
    assert len(asked) == 1
    assert breaker.trusted_closed()  # the next 250 ms cost nothing


async def test_a_half_open_breaker_grants_its_trial_to_one_caller(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings(breaker_fail_max=1, breaker_reset_s=0.2)
    breaker = RedisCircuitBreaker(redis, settings)
    assert await breaker.record_failure() == "open"
    await asyncio.sleep(0.3)  # past reset: the next question turns it half-open
    permits = await asyncio.gather(*(breaker.allow() for _ in range(20)))
    assert [p.allowed for p in permits].count(True) == 1
    assert {p.state for p in permits} == {"half_open"}
    assert not await breaker.refresh()  # not closed: no trusted view, no payload prefetch
    await breaker.record_success()
    assert await breaker.refresh()


async def test_refresh_sees_another_process_failure(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    mine, other = RedisCircuitBreaker(redis, settings), RedisCircuitBreaker(redis, settings)
    assert await mine.refresh()
    await other.record_failure()
    mine._clean_until = 0.0  # the 250 ms view lapsed
    assert not await mine.refresh()
    permit = await mine.allow()  # closed with one failure: still allowed, not trusted
    assert permit.allowed and permit.state == "closed"
    assert not mine.trusted_closed()
