"""client.events() ends after the terminal event (also on a session that already ended)."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.client import PipelineClient
from pipeline.schemas import TERMINAL_STATUSES, SessionEvent
from tests.examples.test_kit_example import nursery_photo

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def collect(client: PipelineClient, session_id: str, **kw: bool) -> list[SessionEvent]:
    async with asyncio.timeout(90):
        return [event async for event in client.events(session_id, **kw)]


def is_terminal(event: SessionEvent) -> bool:
    return event.type == "session.status" and event.data.get("status") in TERMINAL_STATUSES


async def test_events_end_after_the_terminal_event(plantpipe_client: PipelineClient) -> None:
    session_id = await plantpipe_client.submit([nursery_photo()])
    live = await collect(plantpipe_client, session_id)
    assert is_terminal(live[-1])
    assert sum(is_terminal(e) for e in live) == 1

    # With artifacts=True it goes on until every upload has settled.
    settled = await collect(plantpipe_client, session_id, artifacts=True)
    record = await plantpipe_client.status(session_id)
    assert record.artifacts_ready or record.artifacts_settled
    assert any(is_terminal(e) for e in settled)

    # A session that has ended: the replay ends too; from now on there is nothing to wait for.
    replay = await collect(plantpipe_client, session_id)
    assert [e.id for e in replay] == [e.id for e in live]
    assert await collect(plantpipe_client, session_id, from_start=False) == []


async def test_events_of_an_unknown_session_raise(plantpipe_client: PipelineClient) -> None:
    with pytest.raises(LookupError, match="no session"):
        await collect(plantpipe_client, "no-such-session")
