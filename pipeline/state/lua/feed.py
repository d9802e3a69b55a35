"""The Lua fragment every script that changes a session starts with: ``to_feed``."""

from __future__ import annotations

from pipeline.state.events import FEED_MAXLEN

#: Lua: ``to_feed(feed, ttl, kind, sid[, status])`` notes a change in the feed (and keeps the
#: feed alive ``ttl`` seconds after its last entry). Prepended to the scripts that change
#: sessions, so the note is written in the same atomic step as the change.
FEED_LUA = """
local function to_feed(feed, ttl, kind, sid, status)
  if status then
    redis.call('XADD', feed, 'MAXLEN', '~', FEED_N, '*', 'type', kind, 'session', sid,
      'status', status)
  else
    redis.call('XADD', feed, 'MAXLEN', '~', FEED_N, '*', 'type', kind, 'session', sid)
  end
  redis.call('EXPIRE', feed, ttl)
end
""".replace("FEED_N", str(FEED_MAXLEN))
