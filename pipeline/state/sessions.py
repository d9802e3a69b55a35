"""Session records: status machine, per-photo progress, artifact state, event stream.

Status: ``pending → processing → completed | warning | failed`` (``pending`` may also end
directly). Terminal states are final: any other transition is refused. Every change appends
an event to the session's Redis stream, which ``client.wait()`` and ``plantpipe watch`` follow,
and a note to the prefix's feed; the session's place in the listing indexes (by creation
time, and by status) moves in the same script (``pipeline.state.lua.sessions``;
``pipeline.state.listing`` reads the indexes).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from pipeline.errors import PermanentError
from pipeline.schemas import (
    ArtifactStatus,
    BlobRef,
    PhotoProgress,
    SessionRecord,
    SessionResult,
    SessionStatus,
    utcnow,
)
from pipeline.settings import Settings
from pipeline.state.events import FEED_MAXLEN, STREAM_MAXLEN, feed_fields
from pipeline.state.keys import Keys
from pipeline.state.lua import sessions as lua
from pipeline.state.redisio import text, typed

TRANSITION_REFUSED = -2


REQUIRED_FIELDS = frozenset({"photo_count", "status", "created_at", "deadline_at"})


class SessionLost(PermanentError):
    """A session's record is there only in part (Redis lost its data under a running
    session, whose workers then wrote a few fields into an empty hash)."""

    code = "session_lost"
    may_follow_failover = True


class InvalidTransition(RuntimeError):
    pass


class SessionStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._client = typed(redis)
        self._keys = Keys.from_settings(settings)
        self._ttl = settings.session_ttl_s
        self.deadline_s = settings.session_deadline_s

    async def create(
        self,
        session_id: str,
        photo_count: int,
        metadata: dict[str, str] | None = None,
        *,
        deadline_s: float | None = None,
    ) -> datetime:
        now = utcnow()
        deadline = now + timedelta(seconds=deadline_s or self.deadline_s)
        fields: dict[str, Any] = {
            "status": "pending",
            "stage": "queued",
            "photo_count": photo_count,
            "metadata": json.dumps(metadata or {}),
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
            "deadline_at": deadline.isoformat(),
            "art_total": 0,
            "art_uploaded": 0,
            "art_failed": 0,
        }
        for i in range(photo_count):
            fields[f"photo:{i}"] = PhotoProgress(index=i).model_dump_json()
        key = self._keys.session(session_id)
        events = self._keys.session_events(session_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self._ttl)
            pipe.zadd(self._keys.sessions_active, {session_id: deadline.timestamp()})
            pipe.xadd(
                events,
                {"type": "session.created", "data": json.dumps({"photos": photo_count})},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
            pipe.expire(events, self._ttl)
            # the listing's indexes (pipeline.state.listing) and the feed
            pipe.zadd(self._keys.sessions_index, {session_id: now.timestamp()})
            pipe.expire(self._keys.sessions_index, self._ttl)
            pipe.hset(
                self._keys.sessions_search, session_id, search_text(session_id, metadata or {})
            )
            pipe.expire(self._keys.sessions_search, self._ttl)
            pending = self._keys.sessions_by_status("pending")
            pipe.zadd(pending, {session_id: now.timestamp()})
            pipe.expire(pending, self._ttl)
            feed = self._keys.feed
            pipe.xadd(
                feed,
                feed_fields("session.created", session_id),
                maxlen=FEED_MAXLEN,
                approximate=True,
            )
            pipe.expire(feed, self._ttl)
            await pipe.execute()
        return deadline

    async def discard(self, session_id: str) -> None:
        """Remove a session no worker ever saw (a submit Redis refused half-way, at
        ``maxmemory``: deletes are allowed there): its record, its events, its places in the
        listing's indexes. (Its ``session.created`` note stays in the feed.)"""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.session(session_id), self._keys.session_events(session_id))
            pipe.zrem(self._keys.sessions_active, session_id)
            pipe.zrem(self._keys.sessions_index, session_id)
            pipe.zrem(self._keys.sessions_by_status("pending"), session_id)
            pipe.hdel(self._keys.sessions_search, session_id)
            await pipe.execute()

    async def transition(
        self,
        session_id: str,
        status: SessionStatus,
        *,
        reason: str | None = None,
        stage: str | None = None,
        strict: bool = False,
    ) -> bool:
        """Move to ``status``. Returns True if it changed; refused moves return False (or
        raise InvalidTransition with ``strict``)."""
        changed, previous = await lua.transition(
            self._redis,
            self._keys,
            session_id,
            status,
            reason=reason or "",
            stage=stage or "",
            now=utcnow().isoformat(),
            ttl=self._ttl,
        )
        if changed == -1:
            raise LookupError(f"no session {session_id}")
        if changed == TRANSITION_REFUSED and strict:
            raise InvalidTransition(f"session {session_id}: {previous} → {status} refused")
        return changed == 1

    async def update_photo(self, session_id: str, progress: PhotoProgress) -> None:
        await lua.update_photo(
            self._redis,
            self._keys,
            session_id,
            field=f"photo:{progress.index}",
            value=progress.model_dump_json(),
            kind=f"photo.{progress.state}",
            now=utcnow().isoformat(),
            ttl=self._ttl,
        )

    async def set_field(self, session_id: str, field: str, value: str) -> None:
        await self._client.hset(self._keys.session(session_id), field, value)

    async def get_field(self, session_id: str, field: str) -> str | None:
        raw = await self._client.hget(self._keys.session(session_id), field)
        return text(raw) if raw is not None else None

    async def set_originals(self, session_id: str, blobs: list[BlobRef]) -> None:
        """Where each photo's bytes wait until the aggregate step renders them."""
        payload = json.dumps([b.model_dump() for b in blobs])
        await self.set_field(session_id, "originals", payload)

    async def originals(self, session_id: str) -> list[BlobRef]:
        raw = await self.get_field(session_id, "originals")
        return [BlobRef.model_validate(b) for b in json.loads(raw)] if raw else []

    async def set_result(self, session_id: str, result: SessionResult) -> None:
        await self.set_field(session_id, "result", result.model_dump_json())

    async def result(self, session_id: str) -> SessionResult | None:
        raw = await self.get_field(session_id, "result")
        return SessionResult.model_validate_json(raw) if raw else None

    async def exists(self, session_id: str) -> bool:
        return bool(await self._client.exists(self._keys.session(session_id)))

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = await self._client.hgetall(self._keys.session(session_id))
        if not raw:
            return None
        f = {text(k): text(v) for k, v in raw.items()}
        missing = sorted(REQUIRED_FIELDS - set(f))
        if missing:
            raise SessionLost(
                f"session {session_id}'s record has lost {', '.join(missing)} (only "
                f"{', '.join(sorted(f))[:120]} is left): Redis lost its data (restarted "
                "without persistence, or flushed); submit the photos again",
                code="session_lost",
            )
        count = int(f["photo_count"])
        photos = [
            PhotoProgress.model_validate_json(f[f"photo:{i}"])
            if f"photo:{i}" in f
            else PhotoProgress(index=i)
            for i in range(count)
        ]
        artifacts = sorted(
            (
                ArtifactStatus(
                    artifact_id=name[4:],
                    key=f.get(f"artkey:{name[4:]}", ""),
                    state=value,
                )
                for name, value in f.items()
                if name.startswith("art:")
            ),
            key=lambda a: a.key,
        )
        return SessionRecord(
            session_id=session_id,
            status=f["status"],
            stage=f.get("stage", ""),
            reason=f.get("reason") or None,
            photo_count=count,
            photos=photos,
            metadata=json.loads(f.get("metadata", "{}")),
            created_at=_dt(f["created_at"]),
            updated_at=_dt(f.get("updated_at", f["created_at"])),
            deadline_at=_dt(f["deadline_at"]),
            artifacts=artifacts,
            artifacts_uploaded=int(f.get("art_uploaded", 0)),
            artifacts_failed=int(f.get("art_failed", 0)),
            artifacts_ready=f.get("art_ready") == "1",
            artifacts_final=f.get("art_final") == "1",
        )

    async def overdue(self, now: datetime | None = None, limit: int = 500) -> list[str]:
        """Sessions past their deadline that are not terminal yet."""
        moment = (now or utcnow()).timestamp()
        ids = await self._client.zrangebyscore(
            self._keys.sessions_active, "-inf", moment, start=0, num=limit
        )
        return [text(i) for i in ids]


def search_text(session_id: str, metadata: dict[str, str]) -> str:
    """What the sessions list's text filter looks in (``pipeline.state.listing``): the id and
    the metadata's keys and values, lower case; a failure reason is added when one is set."""
    return "\n".join([session_id, *(f"{k} {v}" for k, v in metadata.items())]).lower()


def _dt(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
