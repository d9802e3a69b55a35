"""Content-addressed blob hand-off in Redis.

Job payloads carry a :class:`BlobRef` (sha256 + size), never the bytes. Each blob keeps the
set of *holders* (job ids or artifact ids) that still need it; a holder releases it once, and
the blob is deleted when the last holder lets go. Releasing is idempotent, so a job re-run
after a crash cannot free a blob another job still needs. A TTL bounds what a crashed,
never-resumed holder can leak.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

from redis.asyncio import Redis

from pipeline.errors import PermanentError
from pipeline.schemas import BlobRef
from pipeline.settings import Settings
from pipeline.state.keys import Keys
from pipeline.state.lua import blobs as lua
from pipeline.state.lua.library import LuaCall
from pipeline.state.redisio import typed

#: Payloads from this size on are stored in a MULTI of their own (see ``put_many``).
LARGE_BLOB_BYTES: Final = 1024 * 1024


class BlobMissing(PermanentError):
    code = "blob_missing"
    may_follow_failover = True  # its producer re-runs after a failover and stores it again


class BlobTooLarge(PermanentError):
    code = "blob_too_large"


class BlobStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._client = typed(redis)
        self._keys = Keys.from_settings(settings)
        self._ttl = settings.blob_ttl_s
        self._max = settings.max_blob_bytes

    @staticmethod
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    async def put(self, data: bytes, holders: Iterable[str]) -> BlobRef:
        """Store ``data`` once (by content) and register ``holders`` that need it."""
        [ref] = await self.put_many([(data, holders)])
        return ref

    async def put_many(self, items: Sequence[tuple[bytes, Iterable[str]]]) -> list[BlobRef]:
        """Store each ``(data, holders)`` once (by content): the small ones in one round trip,
        each large one in its own."""
        staged = [(data, list(holders)) for data, holders in items]
        for data, names in staged:
            if not names:
                raise ValueError("a blob needs at least one holder, else it would leak until TTL")
            self.check_size(data)
        shas = [self.digest(data) for data, _ in staged]
        # One MULTI, not a Lua script: a script gets the bytes as an argument and copies them
        # twice more inside Redis (into Lua, back out for SET) — at 4 MiB that was 8 ms of
        # Redis CPU per put against 2.7 ms this way (bench/RESULTS.md, section 1). Small
        # payloads share one MULTI; a large one has its own (one MULTI of several large
        # payloads cost the client 15 % more CPU at 4 × 4 MiB, twice at 30 × 4 MiB).
        triples = [(data, names, sha) for (data, names), sha in zip(staged, shas, strict=True)]
        small = [t for t in triples if len(t[0]) < LARGE_BLOB_BYTES]
        groups = ([small] if small else []) + [
            [t] for t in triples if len(t[0]) >= LARGE_BLOB_BYTES
        ]
        for group in groups:
            async with self._client.pipeline(transaction=True) as pipe:
                for data, names, sha in group:
                    blob, holders = self._keys.blob(sha), self._keys.blob_holders(sha)
                    pipe.set(blob, data, ex=self._ttl, nx=True)  # stored once, by content
                    pipe.expire(blob, self._ttl)  # already there: it lives as long as its holders
                    pipe.sadd(holders, *names)
                    pipe.expire(holders, self._ttl)
                await pipe.execute()
        return [
            BlobRef(sha256=sha, size=len(data)) for (data, _), sha in zip(staged, shas, strict=True)
        ]

    def check_size(self, data: bytes) -> None:
        """Raise :class:`BlobTooLarge` for bytes the store would refuse."""
        if len(data) > self._max:
            raise BlobTooLarge(
                f"blob of {len(data)} bytes exceeds PLANTPIPE_MAX_BLOB_BYTES={self._max}"
            )

    async def hold(self, ref: BlobRef, holders: Iterable[str]) -> None:
        """Register more holders of an existing blob."""
        names = list(holders)
        if not names:
            return
        if await lua.hold(self._redis, self._keys, ref.sha256, names) < 0:
            raise BlobMissing(f"blob {ref.sha256[:12]}… is gone (expired or released)")

    async def get(self, ref: BlobRef) -> bytes:
        return self.checked(ref, await self._client.get(self.key(ref)))

    def key(self, ref: BlobRef) -> str:
        """Where the bytes live (to read them in a pipeline; ``checked`` reads the reply)."""
        return self._keys.blob(ref.sha256)

    def checked(self, ref: BlobRef, data: object) -> bytes:
        """A GET reply of ``key(ref)`` as the blob's bytes, or why they are not there."""
        if data is None:
            raise BlobMissing(
                f"blob {ref.sha256[:12]}… is gone: it expired (TTL {self._ttl}s) or every "
                "holder released it; resubmit the data"
            )
        if not isinstance(data, bytes):
            raise TypeError("blob store needs a Redis client with decode_responses=False")
        return data

    def release_call(self, ref: BlobRef, holder: str) -> LuaCall[int]:
        """The script run of ``release``, to share a round trip (``run_lua_batch``)."""
        return lua.release_call(self._keys, ref.sha256, holder)

    async def release(self, ref: BlobRef, holder: str) -> int:
        """Let go of a blob for ``holder`` (idempotent). Returns how many holders remain."""
        return await self.release_call(ref, holder).run(self._redis)

    async def exists(self, ref: BlobRef) -> bool:
        return bool(await self._client.exists(self._keys.blob(ref.sha256)))
