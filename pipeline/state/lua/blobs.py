"""Blob holder scripts (:class:`pipeline.state.blobs.BlobStore`): more holders of a stored
blob, and one holder letting go (the last one deletes the blob)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from pipeline.state.keys import Keys
from pipeline.state.lua.library import LuaCall, LuaScript, integer

#: KEYS: blob, its holders. ARGV: holders to add. Returns the holders, or -1 (no blob).
HOLD = LuaScript(
    "blob_hold",
    """
local blob, holders = KEYS[1], KEYS[2]
if redis.call('EXISTS', blob) == 0 then return -1 end
for i = 1, #ARGV do redis.call('SADD', holders, ARGV[i]) end
redis.call('EXPIRE', holders, redis.call('TTL', blob))
return redis.call('SCARD', holders)
""",
)

#: KEYS: blob, its holders. ARGV: the holder letting go. Returns the holders left.
RELEASE = LuaScript(
    "blob_release",
    """
local blob, holders = KEYS[1], KEYS[2]
redis.call('SREM', holders, ARGV[1])
local left = redis.call('SCARD', holders)
if left == 0 then redis.call('DEL', blob, holders) end
return left
""",
)


async def hold(redis: Redis, keys: Keys, sha256: str, holders: Sequence[str]) -> int:
    """Add ``holders`` to blob ``sha256``'s; how many it has then, or -1 when it is gone."""
    reply = await HOLD.run(redis, [keys.blob(sha256), keys.blob_holders(sha256)], holders)
    return integer(reply)


def release_call(keys: Keys, sha256: str, holder: str) -> LuaCall[int]:
    """``holder`` letting go of blob ``sha256``, as a call; its result: the holders left."""
    return RELEASE.call([keys.blob(sha256), keys.blob_holders(sha256)], [holder], integer)
