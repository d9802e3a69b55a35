"""The live stream (server-sent events) on a real server and Redis: every change reaches the
open pages, a session's page gets its own, many pages share one feed reader, streams end
when the server stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pipeline.runtime.deadletter import DeadLetters
from pipeline.schemas import DeadLetter
from pipeline.state.sessions import SessionStore
from tests.integration.dashboard.conftest import Served, ServeFactory

pytestmark = pytest.mark.integration
WAIT_S = 20.0


class Stream:
    """One open ``/api/events`` stream, read event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = WAIT_S) -> tuple[str, dict[str, Any]]:
        async with asyncio.timeout(timeout):
            event, data = "", ""
            async for line in self._lines:
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and event:
                    return event, json.loads(data or "{}")
        raise EOFError("the stream ended")

    async def until(self, event: str, timeout: float = WAIT_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                kind, data = await self.next(timeout)
                if kind == event:
                    return data


@contextlib.asynccontextmanager
async def stream(served: Served, query: str = "") -> AsyncIterator[Stream]:
    async with served.http.stream("GET", f"/api/events{query}", timeout=None) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        opened = Stream(response)
        assert (await opened.next())[0] == "hello"
        yield opened


async def test_every_change_reaches_an_open_page(serve: ServeFactory) -> None:
    served = await serve()
    store = SessionStore(served.board.context.client.redis, served.settings)
    async with stream(served) as page:
        await store.create("l1", 1, {"bench": "C-3"})
        created = await page.until("session")
        assert created["session_id"] == "l1" and created["types"] == ["session.created"]
        assert created["summary"]["status"] == "pending"
        assert created["summary"]["metadata"] == {"bench": "C-3"}
        assert created["counts"]["all"] == 1 and created["counts"]["pending"] == 1
        await store.transition("l1", "failed", reason="deadline")
        failed = await page.until("session")
        assert failed["summary"]["status"] == "failed" and failed["counts"]["failed"] == 1
        letters = DeadLetters(served.board.context.client.redis, served.settings)
        letter = {"function": "upload", "queue": "q", "job_id": "j", "kwargs": {}}
        await letters.add(DeadLetter(id="x", error_code="E", reason="r", attempts=1, **letter))
        await page.until("deadletters")


async def test_a_session_page_gets_its_own_changes(serve: ServeFactory) -> None:
    served = await serve()
    store = SessionStore(served.board.context.client.redis, served.settings)
    await store.create("mine", 1)
    async with stream(served, "?session=mine") as page:
        await store.create("other", 1)
        await store.transition("other", "processing")
        await store.transition("mine", "processing")
        kind, data = await page.next()
        assert kind == "session" and data["session_id"] == "mine"
        assert data["summary"]["status"] == "processing"
    bad = await served.http.get("/api/events?session=../x")
    assert bad.status_code == 400


async def test_many_open_pages_share_one_reader(serve: ServeFactory) -> None:
    served = await serve()
    ctx = served.board.context
    store = SessionStore(ctx.client.redis, served.settings)
    pages = 40
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(stream(served)) for _ in range(pages)]
        assert ctx.hub.subscribers == pages
        pool: Any = ctx.client.redis.connection_pool
        # one connection blocked in XREAD for all of them (plus, at most, one in use now)
        assert len(pool._in_use_connections) <= 2
        batches = ctx.hub.batches
        await store.create("shared", 1)
        got = await asyncio.gather(*(s.until("session") for s in streams))
        assert {g["session_id"] for g in got} == {"shared"}
        assert ctx.hub.batches == batches + 1  # one read, one summary, fanned out to 40
    for _ in range(int(WAIT_S / 0.05)):  # closed pages leave the hub
        if not ctx.hub.subscribers:
            break
        await asyncio.sleep(0.05)
    assert ctx.hub.subscribers == 0


async def test_streams_end_when_the_server_stops(serve: ServeFactory) -> None:
    served = await serve()
    async with stream(served) as page:
        stopping = asyncio.create_task(served.board.stop())
        with pytest.raises((EOFError, httpx.RemoteProtocolError, httpx.ReadError)):
            await page.next(timeout=10)
        async with asyncio.timeout(10):
            await stopping
