"""The sessions list's script (:class:`pipeline.state.listing.SessionListing`): a page of
session summaries in one step, dropping the index entries of sessions that expired."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from pipeline.schemas import SessionSummary
from pipeline.state.keys import Keys
from pipeline.state.lua.library import LuaScript, string

# ARGV: prefix, status-set base, then session ids. A JSON list, one object per session
# still there; the ids of expired ones are removed from every index on the way.
SUMMARIES = LuaScript(
    "session_summaries",
    """
local prefix, by_status = ARGV[1], ARGV[2]
local statuses = {'pending', 'processing', 'completed', 'warning', 'failed'}
local names = {'status', 'stage', 'photo_count', 'metadata', 'created_at', 'updated_at',
  'completed_at', 'reason', 'art_total', 'art_uploaded', 'art_failed', 'art_ready'}
local out = {}
for i = 3, #ARGV do
  local sid = ARGV[i]
  local key = prefix .. ':session:' .. sid
  local f = redis.call('HMGET', key, unpack(names))
  if not f[1] then
    redis.call('ZREM', prefix .. ':sessions:index', sid)
    redis.call('HDEL', prefix .. ':sessions:search', sid)
    for _, st in ipairs(statuses) do redis.call('ZREM', by_status .. st, sid) end
  else
    local row = {}
    for j, name in ipairs(names) do row[name] = f[j] or nil end
    local done, failed, det, est = 0, 0, 0, 0
    for j = 0, (tonumber(f[3]) or 0) - 1 do
      local raw = redis.call('HGET', key, 'photo:' .. j)
      if raw then
        local p = cjson.decode(raw)
        if p.state == 'done' then done = done + 1 elseif p.state == 'failed' then
          failed = failed + 1 end
        if type(p.detected) == 'number' then det = det + p.detected end
        if type(p.estimated) == 'number' then est = est + p.estimated end
      end
    end
    row.session_id, row.done, row.failed, row.detected, row.estimated = sid, done, failed,
      det, est
    for _, name in ipairs({'thumbnail_processed', 'thumbnail_original'}) do
      if redis.call('HGET', key, 'art:' .. sid .. ':0:' .. name) == 'uploaded' then
        row.thumbnail = name
        break
      end
    end
    out[#out + 1] = row
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
""",
)


async def summaries(redis: Redis, keys: Keys, session_ids: Sequence[str]) -> list[SessionSummary]:
    """Summaries of the sessions of ``session_ids`` that still exist, in that order."""
    args = [keys.prefix, keys.sessions_status_base, *session_ids]
    rows: list[dict[str, Any]] = json.loads(string(await SUMMARIES.run(redis, [], args)))
    return [_summary(row) for row in rows]


def _summary(row: dict[str, Any]) -> SessionSummary:
    return SessionSummary(
        session_id=row["session_id"],
        status=row["status"],
        stage=row.get("stage") or "",
        reason=row.get("reason") or None,
        photo_count=int(row.get("photo_count") or 0),
        photos_done=int(row["done"]),
        photos_failed=int(row["failed"]),
        detected=int(row["detected"]),
        estimated=int(row["estimated"]),
        metadata=json.loads(row.get("metadata") or "{}"),
        created_at=row["created_at"],
        updated_at=row.get("updated_at") or row["created_at"],
        completed_at=row.get("completed_at") or None,
        artifacts_total=int(row.get("art_total") or 0),
        artifacts_uploaded=int(row.get("art_uploaded") or 0),
        artifacts_failed=int(row.get("art_failed") or 0),
        artifacts_ready=row.get("art_ready") == "1",
        thumbnail=row.get("thumbnail"),
    )
