"""The Lua library: every Lua script plantpipe runs on Redis, in one place, with typed wrappers.

One module per store, each holding its scripts (:class:`~pipeline.state.lua.library.LuaScript`:
the final source, shared fragments joined in) and the typed functions that run them — they
take plain values, build the script's KEYS and ARGV, and return the reply parsed:

- ``sessions``: a session's status change, a photo's progress (``SessionStore``);
- ``artifacts``: registering artifacts, an artifact's state change (``ArtifactStore``);
- ``blobs``: holding and releasing a blob (``BlobStore``);
- ``listing``: a page of session summaries (``SessionListing``);
- ``joins``: a child's report to a join (``JoinStore``);
- ``queues``: the worker's batched claim, the dashboard's queue counts;
- ``breaker``: the S3 circuit breaker's ask, failure, success;
- ``feed``: the ``to_feed`` fragment the session and artifact scripts start with;
- ``library``: how they run (``register_script`` per client, EVALSHA then EVAL on NOSCRIPT,
  ``run_lua_batch`` for several in one round trip).

Importing this package loads every module, so :data:`SCRIPTS` names every script.
``tests/unit/test_redis_source.py`` checks that no module outside this package holds Lua.
"""

from __future__ import annotations

from pipeline.state.lua import artifacts, blobs, breaker, joins, listing, queues, sessions
from pipeline.state.lua.library import SCRIPTS, LuaCall, LuaScript, run_lua_batch

__all__ = [
    "SCRIPTS",
    "LuaCall",
    "LuaScript",
    "artifacts",
    "blobs",
    "breaker",
    "joins",
    "listing",
    "queues",
    "run_lua_batch",
    "sessions",
]
