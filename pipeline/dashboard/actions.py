"""Dead letters as the dashboard shows and acts on them: the list, grouped by cause; retry
one, retry all, discard one. Each action is logged (``dashboard.action``) and kept in a short
audit stream (``Keys.dashboard_audit``) the page shows."""

from __future__ import annotations

import json
from typing import Any

from pipeline.client import PipelineClient
from pipeline.logs import get_logger
from pipeline.runtime.deadletter import NOT_REPLAYABLE
from pipeline.schemas import DeadLetter
from pipeline.state.redisio import text, typed

log = get_logger("pipeline.dashboard.actions")

AUDIT_MAXLEN = 1000
AUDIT_SHOWN = 50


class ActionError(Exception):
    """An action that cannot be done (``status``: the HTTP status to answer)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def target(letter: DeadLetter) -> str:
    """What the job was about: an upload's object key, a photo of a session, a session."""
    payload = letter.kwargs.get("payload")
    if not isinstance(payload, dict):
        return ""
    if isinstance(payload.get("key"), str):
        return str(payload["key"])
    if isinstance(payload.get("index"), int):
        return f"photo {payload['index'] + 1}"
    return "the session" if payload.get("session_id") else ""


def letter_view(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter without its job arguments (they hold blob references, not for show),
    with what it was about."""
    return {**letter.model_dump(mode="json", exclude={"kwargs"}), "target": target(letter)}


def causes(letters: list[DeadLetter]) -> list[dict[str, Any]]:
    """Dead letters grouped by (function, error code): how many, how many tries, newest."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for d in letters:
        g = groups.setdefault(
            (d.function, d.error_code),
            {
                "function": d.function,
                "error_code": d.error_code,
                "count": 0,
                "tries": 0,
                "replayable": 0,
                "last_failed_at": d.failed_at,
                "example": d.reason,
            },
        )
        g["count"] += 1
        g["tries"] += d.attempts
        g["replayable"] += d.replayable
        if d.failed_at >= g["last_failed_at"]:
            g["last_failed_at"], g["example"] = d.failed_at, d.reason
    rows = sorted(groups.values(), key=lambda g: (-g["count"], g["function"], g["error_code"]))
    return [{**g, "last_failed_at": g["last_failed_at"].isoformat()} for g in rows]


async def audit(client: PipelineClient, who: str, action: str, **details: Any) -> None:
    """Log an action and keep it in the audit stream."""
    log.info("dashboard.action", action=action, client=who, **details)
    redis = typed(client.redis)
    key = client.keys.dashboard_audit
    entry = {"action": action, "client": who, "details": json.dumps(details)}
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(key, entry, maxlen=AUDIT_MAXLEN, approximate=True)
        pipe.expire(key, client.settings.session_ttl_s)
        await pipe.execute()


async def recent_actions(client: PipelineClient) -> list[dict[str, Any]]:
    redis = typed(client.redis)
    rows = []
    for entry_id, fields in await redis.xrevrange(client.keys.dashboard_audit, count=AUDIT_SHOWN):
        decoded = {text(k): text(v) for k, v in fields.items()}
        eid = text(entry_id)
        rows.append(
            {
                "at": int(eid.split("-", 1)[0]) / 1000,
                "action": decoded.get("action", ""),
                "client": decoded.get("client", ""),
                "details": json.loads(decoded.get("details", "{}")),
            }
        )
    return rows


async def dead_letters_view(client: PipelineClient) -> dict[str, Any]:
    letters = await client.failed()
    return {
        "letters": [letter_view(d) for d in reversed(letters)],  # newest first
        "causes": causes(letters),
        "replayable": sum(d.replayable for d in letters),
        "actions": await recent_actions(client),
    }


async def retry_one(client: PipelineClient, letter_id: str, who: str) -> dict[str, Any]:
    letter = await client.dead_letters.get(letter_id)
    if letter is None:
        raise ActionError(f"no dead letter {letter_id!r} (already retried or discarded?)", 404)
    if not letter.replayable:
        raise ActionError(
            f"{letter_id} ({letter.function}) cannot be replayed: {NOT_REPLAYABLE}", 409
        )
    replayed = await client.retry_failed([letter_id])
    if not replayed:
        raise ActionError(
            f"{letter_id} could not be enqueued again: a job with the same id is queued", 409
        )
    await audit(
        client,
        who,
        "retry",
        letter=letter_id,
        function=letter.function,
        error_code=letter.error_code,
        target=target(letter),
    )
    return {"replayed": replayed}


async def retry_all(client: PipelineClient, who: str) -> dict[str, Any]:
    letters = await client.failed()
    targets = [d.id for d in letters if d.replayable]
    replayed = await client.retry_failed(targets) if targets else []
    skipped = len(letters) - len(targets)
    await audit(
        client,
        who,
        "retry-all",
        replayed=len(replayed),
        not_replayable=skipped,
        not_enqueued=len(targets) - len(replayed),
    )
    return {
        "replayed": replayed,
        "not_replayable": skipped,
        "not_enqueued": len(targets) - len(replayed),
        "note": NOT_REPLAYABLE if skipped else None,
    }


async def discard(client: PipelineClient, letter_id: str, who: str) -> dict[str, Any]:
    letter = await client.dead_letters.get(letter_id)
    if letter is None or not await client.dead_letters.remove(letter_id):
        raise ActionError(f"no dead letter {letter_id!r} (already retried or discarded?)", 404)
    await audit(
        client,
        who,
        "discard",
        letter=letter_id,
        function=letter.function,
        error_code=letter.error_code,
        target=target(letter),
    )
    return {"discarded": letter_id}
