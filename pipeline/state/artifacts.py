"""Artifact records (one object to upload) and their state: pending → uploaded | failed.

A transition updates, in one Lua script (``pipeline.state.lua.artifacts``): the artifact hash,
its event stream (followed by ``UploadHandle.wait()``), and — for session artifacts — the
session's counters and stream, flipping ``artifacts_ready`` once every registered artifact is
uploaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from pipeline.schemas import ArtifactRecord, ArtifactState, utcnow
from pipeline.settings import Settings
from pipeline.state.keys import Keys
from pipeline.state.lua import artifacts as lua
from pipeline.state.lua.library import LuaCall
from pipeline.state.redisio import text, typed


class ArtifactStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._client = typed(redis)
        self._keys = Keys.from_settings(settings)
        self._ttl = settings.session_ttl_s

    async def register(
        self,
        records: Sequence[ArtifactRecord],
        *,
        session_id: str | None = None,
        final: bool = False,
    ) -> bool:
        """Create records (idempotent: existing ones keep their state). Returns ready-flip."""
        _created, ready = await lua.register(
            self._redis,
            self._keys,
            [r.model_dump_json() for r in records],
            session_id=session_id,
            final=final,
            ttl=self._ttl,
            now=utcnow().isoformat(),
        )
        return ready

    def transition_call(
        self,
        artifact_id: str,
        state: ArtifactState,
        *,
        session_id: str | None,
        error_code: str | None = None,
        reason: str | None = None,
        etag: str | None = None,
    ) -> LuaCall[tuple[int, bool]]:
        """The script run of ``transition``, to share a round trip (``run_lua_batch``);
        its result: as ``transition``'s."""
        return lua.transition_call(
            self._keys,
            artifact_id,
            state,
            session_id=session_id,
            error_code=error_code,
            reason=reason,
            etag=etag,
            now=utcnow().isoformat(),
            ttl=self._ttl,
        )

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
        return await call.run(self._redis)

    async def get(self, artifact_id: str) -> ArtifactRecord | None:
        return self.parse(await self._client.hgetall(self.key(artifact_id)))

    def key(self, artifact_id: str) -> str:
        """The hash holding an artifact's record and state (to read it in a pipeline)."""
        return self._keys.artifact(artifact_id)

    @staticmethod
    def parse(raw: Mapping[bytes, bytes] | None) -> ArtifactRecord | None:
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
