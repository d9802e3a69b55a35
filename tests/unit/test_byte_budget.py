"""ByteBudget: bytes held never exceed the capacity, first come first served, cancel-safe."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.runtime.budget import ByteBudget


async def test_holds_never_exceed_the_capacity() -> None:
    budget = ByteBudget(100)
    peak = 0

    async def task(n: int) -> None:
        nonlocal peak
        async with budget.hold(n):
            peak = max(peak, budget.held)
            await asyncio.sleep(0.001 * (n % 7))

    await asyncio.gather(*(task(10 + i % 50) for i in range(200)))
    assert 0 < peak <= 100
    assert budget.held == 0


async def test_a_request_larger_than_the_budget_runs_alone() -> None:
    budget = ByteBudget(100)
    async with budget.hold(30):
        big = asyncio.create_task(budget.acquire(1000))
        await asyncio.sleep(0.01)
        assert not big.done()  # waits for the 30 held
    await asyncio.wait_for(big, 1)
    assert budget.held == 100  # all of it, no more
    assert not budget.try_acquire(1)
    budget.release(1000)
    assert budget.held == 0


async def test_first_come_first_served() -> None:
    budget = ByteBudget(100)
    order: list[str] = []
    await budget.acquire(90)

    async def want(name: str, n: int) -> None:
        async with budget.hold(n):
            order.append(name)

    large = asyncio.create_task(want("large", 60))
    await asyncio.sleep(0)
    small = asyncio.create_task(want("small", 5))  # fits now, but the large one came first
    await asyncio.sleep(0.01)
    assert order == []
    assert not budget.try_acquire(5)
    budget.release(90)
    await asyncio.gather(large, small)
    assert order == ["large", "small"]


async def test_a_cancelled_waiter_leaks_nothing_and_unblocks_those_behind() -> None:
    budget = ByteBudget(100)
    await budget.acquire(50)
    blocked = asyncio.create_task(budget.acquire(80))  # waits for the 50
    await asyncio.sleep(0)
    behind = asyncio.create_task(budget.acquire(40))  # fits, but queued behind it
    await asyncio.sleep(0.01)
    assert not behind.done()
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    await asyncio.wait_for(behind, 1)
    assert budget.held == 90
    budget.release(40)
    budget.release(50)
    assert budget.held == 0


async def test_cancelled_right_after_the_grant_gives_the_bytes_back() -> None:
    budget = ByteBudget(100)
    await budget.acquire(100)
    waiter = asyncio.create_task(budget.acquire(60))
    await asyncio.sleep(0)
    budget.release(100)  # grants the waiter (its future resolved) ...
    waiter.cancel()  # ... and it is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.held == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        ByteBudget(0)
