"""Artifact records (one object to upload) and their state: pending → uploaded | failed.

A transition updates, in one Lua script: the artifact hash, its event stream (followed by
``UploadHandle.wait()``), and — for session artifacts — the session's counters and stream,
flipping ``artifacts_ready`` once every registered artifact is uploaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from pipeline.schemas import ArtifactRecord, ArtifactState, utcnow
from pipeline.settings import Settings
from pipeline.state.events import FEED_LUA, STREAM_MAXLEN
from pipeline.state.keys import Keys
from pipeline.state.redisio import LuaCall, run_lua, text, typed

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

_REGISTER = (
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
"""
)

_TRANSITION = (
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
""".replace("MAXLEN_N", str(STREAM_MAXLEN))
)


class ArtifactStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._client = typed(redis)
        self._keys = Keys.from_settings(settings)
        self._prefix = settings.key_prefix
        self._ttl = settings.session_ttl_s

    async def register(
        self,
        records: Sequence[ArtifactRecord],
        *,
        session_id: str | None = None,
        final: bool = False,
    ) -> bool:
        """Create records (idempotent: existing ones keep their state). Returns ready-flip."""
        sid = session_id or ""
        keys = [self._keys.session(sid), self._keys.session_events(sid), self._keys.feed]
        args: list[Any] = [
            self._prefix,
            "1" if session_id else "0",
            "1" if final else "0",
            self._ttl,
            utcnow().isoformat(),
            sid,
            *(r.model_dump_json() for r in records),
        ]
        _created, ready = await run_lua(self._redis, _REGISTER, keys, args)
        return bool(ready)

    def transition_call(
        self,
        artifact_id: str,
        state: ArtifactState,
        *,
        session_id: str | None,
        error_code: str | None = None,
        reason: str | None = None,
        etag: str | None = None,
    ) -> LuaCall:
        """The script run of ``transition``, to share a round trip (``run_lua_batch``);
        its reply reads with ``transition_result``."""
        sid = session_id or ""
        keys = [
            self._keys.artifact(artifact_id),
            self._keys.artifact_events(artifact_id),
            self._keys.session(sid),
            self._keys.session_events(sid),
            self._keys.feed,
        ]
        args = [
            state,
            error_code or "",
            reason or "",
            etag or "",
            utcnow().isoformat(),
            artifact_id,
            self._ttl,
            "1" if session_id else "0",
            sid,
        ]
        return LuaCall(_TRANSITION, keys, args)

    @staticmethod
    def transition_result(reply: Any) -> tuple[int, bool]:
        changed, ready = reply
        return int(changed), bool(ready)

    async def transition(
        self,
        artifact_id: str,
        state: ArtifactState,
        *,
        session_id: str | None,
        error_code: str | None = None,
        reason: str | None = None,
        etag: str | None = None,
    ) -> tuple[int, bool]:
        """Move an artifact to ``state``. Returns (1 changed | 0 same | -1 unknown | -2 final,
        whether this transition made the session's artifacts ready)."""
        call = self.transition_call(
            artifact_id,
            state,
            session_id=session_id,
            error_code=error_code,
            reason=reason,
            etag=etag,
        )
        return self.transition_result(await run_lua(self._redis, call.source, call.keys, call.args))

    async def get(self, artifact_id: str) -> ArtifactRecord | None:
        return self.parse(await self._client.hgetall(self.key(artifact_id)))

    def key(self, artifact_id: str) -> str:
        """The hash holding an artifact's record and state (to read it in a pipeline)."""
        return self._keys.artifact(artifact_id)

    @staticmethod
    def parse(raw: Any) -> ArtifactRecord | None:
        """An artifact's hash (HGETALL reply) as its record; None when there is none."""
        if not raw:
            return None
        fields = {text(k): text(v) for k, v in raw.items()}
        record = ArtifactRecord.model_validate(json.loads(fields["record"]))
        return record.model_copy(
            update={
                "state": fields.get("state", "pending"),
                "error_code": fields.get("error_code") or None,
                "reason": fields.get("reason") or None,
                "etag": fields.get("etag") or None,
            }
        )
