"""Artifact scripts (:class:`pipeline.state.artifacts.ArtifactStore`): registering records
and moving one to a new state, each also updating its session's counters, events and feed,
and flipping the session's ``art_ready`` once every registered artifact is uploaded."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from pipeline.state.events import STREAM_MAXLEN
from pipeline.state.keys import Keys
from pipeline.state.lua.feed import FEED_LUA
from pipeline.state.lua.library import LuaCall, LuaScript, integer, table
from pipeline.state.redisio import LuaReply

# Shared Lua: flip artifacts_ready when the final set is registered and all are uploaded.
_READY_FN = (
    FEED_LUA
    + """
local function check_ready(sess, sess_ev, now, feed, sid, ttl)
  if redis.call('HGET', sess, 'art_final') ~= '1' then return 0 end
  if redis.call('HGET', sess, 'art_ready') == '1' then return 0 end
  local total = tonumber(redis.call('HGET', sess, 'art_total') or '0')
  local up = tonumber(redis.call('HGET', sess, 'art_uploaded') or '0')
  if up < total then return 0 end
  redis.call('HSET', sess, 'art_ready', '1', 'updated_at', now)
  redis.call('XADD', sess_ev, 'MAXLEN', '~', MAXLEN_N, '*', 'type', 'artifacts.ready',
    'data', cjson.encode({uploaded = up, total = total}))
  to_feed(feed, ttl, 'artifacts.ready', sid)
  return 1
end
""".replace("MAXLEN_N", str(STREAM_MAXLEN))
)

#: KEYS: session, its events, feed (of session "" without one). ARGV: key prefix, has
#: session ('1'/'0'), final ('1'/'0'), TTL, now, session id, then each record (JSON).
#: Returns {records created, 1 if this made the session's artifacts ready}.
REGISTER = LuaScript(
    "artifact_register",
    _READY_FN
    + """
local sess, sess_ev, feed = KEYS[1], KEYS[2], KEYS[3]
local prefix, has_session, final = ARGV[1], ARGV[2] == '1', ARGV[3] == '1'
local ttl, now, sid = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local created = 0
for i = 7, #ARGV do
  local rec = cjson.decode(ARGV[i])
  local art = prefix .. ':artifact:' .. rec.artifact_id
  if redis.call('HSETNX', art, 'state', 'pending') == 1 then
    created = created + 1
    redis.call('HSET', art, 'record', ARGV[i], 'key', rec.key, 'updated_at', now)
    redis.call('EXPIRE', art, ttl)
    if has_session then
      if redis.call('HSETNX', sess, 'art:' .. rec.artifact_id, 'pending') == 1 then
        redis.call('HINCRBY', sess, 'art_total', 1)
        redis.call('HSET', sess, 'artkey:' .. rec.artifact_id, rec.key)
      end
    end
  end
end
local ready = 0
if has_session then
  if final then redis.call('HSET', sess, 'art_final', '1') end
  ready = check_ready(sess, sess_ev, now, feed, sid, ttl)
end
return {created, ready}
""",
)

#: KEYS: artifact, its events, session, its events, feed. ARGV: new state, error code,
#: reason, etag, now, artifact id, TTL, has session ('1'/'0'), session id.
#: Returns {1 changed | 0 same | -1 unknown | -2 final, 1 if this made the session ready}.
TRANSITION = LuaScript(
    "artifact_transition",
    _READY_FN
    + """
local art, art_ev, sess, sess_ev, feed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local new, code, reason, etag, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local aid, ttl, has_session, sid = ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1', ARGV[9]
local cur = redis.call('HGET', art, 'state')
if not cur then return {-1, 0} end
if cur == new then return {0, 0} end
if cur == 'uploaded' then return {-2, 0} end
redis.call('HSET', art, 'state', new, 'error_code', code, 'reason', reason, 'etag', etag,
  'updated_at', now)
local data = cjson.encode({artifact_id = aid, state = new, error_code = code, reason = reason,
  key = redis.call('HGET', art, 'key')})
redis.call('XADD', art_ev, 'MAXLEN', '~', 100, '*', 'type', 'artifact.' .. new, 'data', data)
redis.call('EXPIRE', art_ev, ttl)
local ready = 0
if has_session and redis.call('EXISTS', sess) == 1 then
  redis.call('HSET', sess, 'art:' .. aid, new, 'updated_at', now)
  if cur == 'failed' then redis.call('HINCRBY', sess, 'art_failed', -1) end
  if new == 'uploaded' then redis.call('HINCRBY', sess, 'art_uploaded', 1) end
  if new == 'failed' then redis.call('HINCRBY', sess, 'art_failed', 1) end
  redis.call('XADD', sess_ev, 'MAXLEN', '~', MAXLEN_N, '*', 'type', 'artifact.' .. new,
    'data', data)
  to_feed(feed, ttl, 'artifact.' .. new, sid)
  ready = check_ready(sess, sess_ev, now, feed, sid, ttl)
end
return {1, ready}
""".replace("MAXLEN_N", str(STREAM_MAXLEN)),
)


async def register(
    redis: Redis,
    keys: Keys,
    records: Sequence[str],
    *,
    session_id: str | None,
    final: bool,
    ttl: int,
    now: str,
) -> tuple[int, bool]:
    """Create artifact records (JSON, each once: existing ones keep their state), counted
    in ``session_id``'s totals when given. Returns ``(created, whether this made the
    session's artifacts ready)``."""
    sid = session_id or ""
    reply = table(
        await REGISTER.run(
            redis,
            [keys.session(sid), keys.session_events(sid), keys.feed],
            [
                keys.prefix,
                "1" if session_id else "0",
                "1" if final else "0",
                ttl,
                now,
                sid,
                *records,
            ],
        )
    )
    return integer(reply[0]), bool(integer(reply[1]))


def transition_call(
    keys: Keys,
    artifact_id: str,
    state: str,
    *,
    session_id: str | None,
    error_code: str | None,
    reason: str | None,
    etag: str | None,
    now: str,
    ttl: int,
) -> LuaCall[tuple[int, bool]]:
    """An artifact's move to ``state``, as a call (run alone or in ``run_lua_batch``); its
    result: ``(1 changed | 0 same | -1 unknown | -2 final, whether this made the session's
    artifacts ready)``."""
    sid = session_id or ""
    return TRANSITION.call(
        [
            keys.artifact(artifact_id),
            keys.artifact_events(artifact_id),
            keys.session(sid),
            keys.session_events(sid),
            keys.feed,
        ],
        [
            state,
            error_code or "",
            reason or "",
            etag or "",
            now,
            artifact_id,
            ttl,
            "1" if session_id else "0",
            sid,
        ],
        _transition_result,
    )


def _transition_result(reply: LuaReply) -> tuple[int, bool]:
    changed, ready = table(reply)
    return integer(changed), bool(integer(ready))
