"""One reader of the feed per process, however many pages are open.

:class:`FeedHub` blocks in ``XREAD`` on the prefix's feed (``Keys.feed``: every session
change and dead letter, noted by the scripts that make them). For each batch of entries it
reads the touched sessions' summaries once (one script run) and hands every subscriber —
one per open page's event stream — the same encoded server-sent events. An idle dashboard
costs one blocked Redis read, re-armed every ``block_ms``, plus each stream's keep-alive.
A subscriber that falls behind (its queue full) is told to ``resync``: it reloads its data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from pipeline.logs import get_logger
from pipeline.state.events import last_event_id, read_after
from pipeline.state.listing import SessionListing

log = get_logger("pipeline.dashboard.hub")

QUEUE_SIZE = 256
STARTUP_S = 10.0
CLOSED = ""  # put in a queue when the hub closes: the stream ends


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    """One server-sent event, encoded."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass(eq=False)
class Subscription:
    """One open page's stream: everything (``session`` None) or one session's changes."""

    session: str | None = None
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def offer(self, message: str) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:  # too slow a reader: drop what it has, tell it to reload
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(sse("resync", {}))


class FeedHub:
    def __init__(
        self, redis: Redis, listing: SessionListing, feed: str, *, block_ms: int = 15_000
    ) -> None:
        self._redis = redis
        self._listing = listing
        self._feed = feed
        self._block_ms = block_ms
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._closed = False
        self.batches = 0  # feed batches dispatched (tests, diagnostics)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def subscribe(self, session: str | None = None) -> Subscription:
        """A new subscription; the reader starts with the first one. Returns once the reader
        has its position in the feed, so no change after this call is missed."""
        if self._closed:
            raise RuntimeError("the dashboard is shutting down")
        sub = Subscription(session)
        self._subscribers.add(sub)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dashboard-feed")
        try:
            await asyncio.wait_for(self._started.wait(), STARTUP_S)
        except TimeoutError:
            self._subscribers.discard(sub)
            raise ConnectionError("the feed cannot be read: is Redis reachable?") from None
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    async def close(self) -> None:
        """Stop the reader; every open stream gets its end."""
        self._closed = True
        for sub in list(self._subscribers):
            sub.offer(CLOSED)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.5
        cursor: str | None = None
        while True:
            try:
                if cursor is None:
                    cursor = await last_event_id(self._redis, self._feed)
                    self._started.set()
                entries = await read_after(self._redis, self._feed, cursor, block_ms=self._block_ms)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep the position, try again
                log.warning("dashboard.feed_unavailable", error=str(exc), retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if entries:
                cursor = entries[-1][0]
                try:
                    await self._dispatch(cursor, entries)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("dashboard.feed_dispatch_failed", error=str(exc))
                    for sub in list(self._subscribers):
                        sub.offer(sse("resync", {}))

    async def _dispatch(self, cursor: str, entries: list[tuple[str, dict[str, str]]]) -> None:
        self.batches += 1
        if not self._subscribers:
            return
        kinds: dict[str, list[str]] = {}
        letters = False
        counts_changed = False
        for _id, fields in entries:
            kind, session = fields.get("type", ""), fields.get("session", "")
            if kind.startswith("deadletter."):
                letters = True
            elif session:
                kinds.setdefault(session, []).append(kind)
                counts_changed |= kind in ("session.created", "session.status")
        summaries = {s.session_id: s for s in await self._listing.summaries(list(kinds))}
        counts = await self._listing.counts() if counts_changed else None
        messages: dict[str, str] = {}
        for session, types in kinds.items():
            summary = summaries.get(session)
            data = {
                "session_id": session,
                "types": sorted(set(types)),
                "summary": summary.model_dump(mode="json") if summary else None,
                "counts": counts,
            }
            messages[session] = sse("session", data, cursor)
        letters_message = sse("deadletters", {}, cursor) if letters else None
        for sub in list(self._subscribers):
            if sub.session is None:
                for message in messages.values():
                    sub.offer(message)
                if letters_message is not None:
                    sub.offer(letters_message)
            elif sub.session in messages:
                sub.offer(messages[sub.session])
