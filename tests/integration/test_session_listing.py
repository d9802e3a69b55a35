"""The sessions list (pipeline.state.listing) and the feed, on real Redis: the indexes the
session scripts keep, pages, filters by status and text, expired sessions, the feed's notes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.runtime.deadletter import DeadLetters
from pipeline.schemas import ArtifactRecord, DeadLetter, PhotoProgress
from pipeline.state.artifacts import ArtifactStore
from pipeline.state.keys import Keys
from pipeline.state.listing import SessionListing
from pipeline.state.sessions import SessionStore
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration


async def feed_entries(redis: Redis, keys: Keys) -> list[dict[str, str]]:
    client: Any = redis
    entries = await client.xrange(keys.feed)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]


async def test_pages_filters_and_summaries(make_settings: SettingsFactory, redis: Redis) -> None:
    settings = make_settings()
    sessions = SessionStore(redis, settings)
    listing = SessionListing(redis, settings)
    ids = [f"s{i:03d}" for i in range(7)]
    for i, sid in enumerate(ids):
        await sessions.create(sid, 2, {"bench": f"A-{i}", "note": "Señal" if i == 3 else "x"})
    await sessions.transition(ids[1], "processing")
    await sessions.update_photo(
        ids[1], PhotoProgress(index=0, state="done", detected=40, estimated=3)
    )
    await sessions.update_photo(ids[1], PhotoProgress(index=1, state="failed", reason="bad"))
    await sessions.transition(ids[1], "warning", reason="1 of 2 photos failed: NoSuchBucket")
    await sessions.transition(ids[2], "completed")

    first = await listing.page(per_page=3)
    assert [s.session_id for s in first.sessions] == ["s006", "s005", "s004"]  # newest first
    assert (first.total, first.pages, first.page) == (7, 3, 1)
    assert first.counts == {
        "all": 7,
        "pending": 5,
        "processing": 0,
        "completed": 1,
        "warning": 1,
        "failed": 0,
    }
    last = await listing.page(page=3, per_page=3)
    assert [s.session_id for s in last.sessions] == ["s000"]

    warned = await listing.page(status="warning")
    [row] = warned.sessions
    assert row.session_id == "s001" and row.status == "warning"
    assert (row.photo_count, row.photos_done, row.photos_failed) == (2, 1, 1)
    assert (row.detected, row.estimated) == (40, 3)
    assert row.metadata == {"bench": "A-1", "note": "x"}
    assert row.reason is not None and "NoSuchBucket" in row.reason
    assert row.completed_at is not None and row.completed_at >= row.created_at

    by_text = await listing.page(query="a-5")  # metadata value, any case
    assert [s.session_id for s in by_text.sessions] == ["s005"]
    assert (await listing.page(query="nosuchbucket")).total == 1  # the failure reason
    assert [s.session_id for s in (await listing.page(query="SEÑAL")).sessions] == ["s003"]
    assert [s.session_id for s in (await listing.page(query="señal")).sessions] == ["s003"]
    assert (await listing.page(query="s00")).total == 7  # the id
    assert (await listing.page(status="completed", query="s00")).total == 1
    assert (await listing.page(query="nothing like it")).sessions == []


async def test_expired_sessions_leave_the_list(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    sessions = SessionStore(redis, settings)
    listing = SessionListing(redis, settings)
    for sid in ("old", "new"):
        await sessions.create(sid, 1)
    await redis.delete(Keys.from_settings(settings).session("old"))  # as if its TTL ran out
    page = await listing.page()
    assert [s.session_id for s in page.sessions] == ["new"]
    assert (await listing.counts())["all"] == 1  # dropped from the indexes on the way
    assert (await listing.counts())["pending"] == 1


async def test_sessions_without_a_search_text_are_found_and_given_one(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    """Records written before search texts existed: matched from the record, text stored;
    texts of sessions no longer indexed are dropped."""
    settings = make_settings()
    keys = Keys.from_settings(settings)
    listing = SessionListing(redis, settings)
    n = 1030
    client: Any = redis
    async with client.pipeline(transaction=False) as pipe:  # records as sessions.create makes
        for i in range(n):
            sid = f"bulk{i:05d}"
            pipe.hset(
                keys.session(sid),
                mapping={
                    "status": "pending",
                    "photo_count": 0,
                    "created_at": "2030-01-01T00:00:00+00:00",
                    "metadata": json.dumps({"row": "even" if i % 2 == 0 else "odd"}),
                },
            )
            pipe.expire(keys.session(sid), 600)
            pipe.zadd(keys.sessions_index, {sid: 1_900_000_000 + i})
        pipe.hset(keys.sessions_search, "gone", "even, but no longer indexed")
        await pipe.execute()
    page = await listing.page(query="EVEN", per_page=10, page=2)
    assert page.total == (n + 1) // 2
    assert [s.session_id for s in page.sessions][:2] == [f"bulk{n - 22:05d}", f"bulk{n - 24:05d}"]
    assert await redis.hlen(keys.sessions_search) == n  # backfilled, "gone" dropped
    assert await redis.hget(keys.sessions_search, "bulk00001") == b"bulk00001\nrow odd"


async def test_every_change_is_noted_in_the_feed(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    keys = Keys.from_settings(settings)
    sessions = SessionStore(redis, settings)
    artifacts = ArtifactStore(redis, settings)
    await sessions.create("f1", 1)
    await sessions.transition("f1", "processing")
    await sessions.update_photo("f1", PhotoProgress(index=0, state="done", detected=1))
    record = ArtifactRecord(
        artifact_id="f1:0:original",
        key="f1/original.jpg",
        content_type="image/jpeg",
        size=3,
        session_id="f1",
    )
    await artifacts.register([record], session_id="f1", final=True)
    await artifacts.transition("f1:0:original", "uploaded", session_id="f1")
    await sessions.transition("f1", "completed")
    letters = DeadLetters(redis, settings)  # type: ignore[arg-type]
    await letters.add(
        DeadLetter(
            id="d1",
            function="upload",
            queue="q",
            job_id="j",
            kwargs={},
            error_code="NoSuchBucket",
            reason="r",
            attempts=1,
            session_id="f1",
        )
    )
    await letters.remove("d1")
    seen = [(e["type"], e["session"], e.get("status")) for e in await feed_entries(redis, keys)]
    assert seen == [
        ("session.created", "f1", None),
        ("session.status", "f1", "processing"),
        ("photo.done", "f1", None),
        ("artifact.uploaded", "f1", None),
        ("artifacts.ready", "f1", None),
        ("session.status", "f1", "completed"),
        ("deadletter.added", "f1", None),
        ("deadletter.removed", "", None),
    ]
    for key in (keys.feed, keys.sessions_index, keys.sessions_by_status("completed")):
        assert 0 < await redis.ttl(key) <= settings.session_ttl_s  # nothing kept forever
    assert await redis.zscore(keys.sessions_by_status("processing"), "f1") is None
