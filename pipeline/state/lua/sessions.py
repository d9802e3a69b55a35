"""Session scripts (:class:`pipeline.state.sessions.SessionStore`): a status change and a
photo's progress, each written with its event and its note in the feed in one atomic step —
a status change also moves the session between the listing's status indexes."""

from __future__ import annotations

from redis.asyncio import Redis

from pipeline.state.events import STREAM_MAXLEN
from pipeline.state.keys import Keys
from pipeline.state.lua.feed import FEED_LUA
from pipeline.state.lua.library import LuaScript, integer, string, table

#: KEYS: session, its events, sessions_active, sessions_index, feed, sessions_search.
#: ARGV: new status, reason, stage, now, session id, status-set base, TTL.
#: Returns {1 changed | 0 same | -1 no session | -2 refused, previous status}.
TRANSITION = LuaScript(
    "session_transition",
    (
        FEED_LUA
        + """
local sess, ev, active, index, feed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local search = KEYS[6]
local new, reason, stage, now, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local by_status, ttl = ARGV[6], tonumber(ARGV[7])
local cur = redis.call('HGET', sess, 'status')
if not cur then return {-1, ''} end
if cur == new then return {0, cur} end
local allowed = {
  pending = {processing = true, completed = true, warning = true, failed = true},
  processing = {completed = true, warning = true, failed = true},
}
if not allowed[cur] or not allowed[cur][new] then return {-2, cur} end
redis.call('HSET', sess, 'status', new, 'updated_at', now)
if reason ~= '' then
  redis.call('HSET', sess, 'reason', reason)
  local text = redis.call('HGET', search, sid)
  if text then redis.call('HSET', search, sid, text .. '\\n' .. string.lower(reason)) end
end
if stage ~= '' then redis.call('HSET', sess, 'stage', stage) end
if new == 'completed' or new == 'warning' or new == 'failed' then
  redis.call('ZREM', active, sid)
  redis.call('HSET', sess, 'completed_at', now)
end
redis.call('XADD', ev, 'MAXLEN', '~', MAXLEN_N, '*', 'type', 'session.status', 'data',
  cjson.encode({status = new, previous = cur, reason = reason, stage = stage}))
local created = redis.call('ZSCORE', index, sid)
if created then
  redis.call('ZREM', by_status .. cur, sid)
  redis.call('ZADD', by_status .. new, created, sid)
  redis.call('EXPIRE', by_status .. new, ttl)
end
to_feed(feed, ttl, 'session.status', sid, new)
return {1, cur}
"""
    ).replace("MAXLEN_N", str(STREAM_MAXLEN)),
)

#: KEYS: session, its events, feed. ARGV: field, value, event type, now, session id, TTL.
#: Returns 1, or 0 when the session is gone (nothing written).
PHOTO = LuaScript(
    "session_photo",
    (
        FEED_LUA
        + """
local sess, ev, feed = KEYS[1], KEYS[2], KEYS[3]
local field, value, kind, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local sid, ttl = ARGV[5], tonumber(ARGV[6])
if redis.call('EXISTS', sess) == 0 then return 0 end
redis.call('HSET', sess, field, value, 'updated_at', now)
redis.call('XADD', ev, 'MAXLEN', '~', MAXLEN_N, '*', 'type', kind, 'data', value)
to_feed(feed, ttl, kind, sid)
return 1
"""
    ).replace("MAXLEN_N", str(STREAM_MAXLEN)),
)


async def transition(
    redis: Redis,
    keys: Keys,
    session_id: str,
    status: str,
    *,
    reason: str,
    stage: str,
    now: str,
    ttl: int,
) -> tuple[int, str]:
    """Move a session to ``status``: ``(1 changed | 0 already there | -1 no such session |
    -2 refused, the status it had)`` (``""`` when there is no session)."""
    reply = table(
        await TRANSITION.run(
            redis,
            [
                keys.session(session_id),
                keys.session_events(session_id),
                keys.sessions_active,
                keys.sessions_index,
                keys.feed,
                keys.sessions_search,
            ],
            [status, reason, stage, now, session_id, keys.sessions_status_base, ttl],
        )
    )
    return integer(reply[0]), string(reply[1])


async def update_photo(
    redis: Redis,
    keys: Keys,
    session_id: str,
    *,
    field: str,
    value: str,
    kind: str,
    now: str,
    ttl: int,
) -> bool:
    """Set a session's ``field`` to ``value`` and note it (event ``kind``); False when the
    session is gone (nothing written)."""
    reply = await PHOTO.run(
        redis,
        [keys.session(session_id), keys.session_events(session_id), keys.feed],
        [field, value, kind, now, session_id, ttl],
    )
    return integer(reply) == 1
