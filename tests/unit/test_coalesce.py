"""SameTurnBatcher: calls made in the same turn of the event loop are flushed as one."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.runtime.coalesce import SameTurnBatcher


async def test_calls_of_one_turn_share_a_flush_and_later_ones_get_their_own() -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        await asyncio.sleep(0)
        flushed.append(list(items))

    batcher: SameTurnBatcher[int] = SameTurnBatcher(flush)
    await asyncio.gather(*(batcher.add(i) for i in range(5)))
    await batcher.add(99)
    assert flushed == [[0, 1, 2, 3, 4], [99]]


async def test_a_failed_flush_fails_every_call_it_carried() -> None:
    async def flush(items: list[str]) -> None:
        raise ConnectionError(f"redis down ({len(items)} items)")

    batcher: SameTurnBatcher[str] = SameTurnBatcher(flush)
    outcomes = await asyncio.gather(batcher.add("a"), batcher.add("b"), return_exceptions=True)
    assert [str(o) for o in outcomes] == ["redis down (2 items)"] * 2


async def test_a_cancelled_caller_does_not_take_its_item_back() -> None:
    flushed: list[list[str]] = []
    release = asyncio.Event()

    async def flush(items: list[str]) -> None:
        await release.wait()
        flushed.append(list(items))

    batcher: SameTurnBatcher[str] = SameTurnBatcher(flush)
    impatient = asyncio.ensure_future(batcher.add("x"))
    patient = asyncio.ensure_future(batcher.add("y"))
    await asyncio.sleep(0.01)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    release.set()
    await patient
    assert flushed == [["x", "y"]]
