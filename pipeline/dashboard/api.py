"""The JSON API behind every page (``GET /api/`` lists it), the live stream and the files.

Reading is ``GET``; every action is a ``POST`` with the ``X-Plantpipe-Token`` header (see
:mod:`pipeline.dashboard.security`). Errors answer ``{"error": "one line"}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from pipeline.dashboard import actions
from pipeline.dashboard.context import DashboardContext
from pipeline.dashboard.detail import session_detail
from pipeline.dashboard.files import valid_session_id
from pipeline.dashboard.hub import CLOSED
from pipeline.dashboard.security import ActionRefused, check_action
from pipeline.dashboard.system import system_view
from pipeline.dashboard.upload import MAX_PHOTOS, UploadRefused, body_limit, submit_upload
from pipeline.schemas import SessionStatus
from pipeline.state.redisio import typed

KEEPALIVE_S = 25.0
STATUSES = get_args(SessionStatus)


def _ctx(request: Request) -> DashboardContext:
    ctx: DashboardContext = request.app.state.dashboard
    return ctx


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _who(request: Request) -> str:
    peer = request.client
    return f"{peer.host}:{peer.port}" if peer else "unknown"


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name, "")
    return int(raw) if raw.isdigit() else default


async def index(request: Request) -> Response:
    return JSONResponse(
        {
            "endpoints": [
                {"method": m, "path": p, "what": what}
                for p, _h, methods, what in DOCS
                for m in methods
            ]
        }
    )


async def overview(request: Request) -> Response:
    ctx = _ctx(request)
    client = ctx.client
    return JSONResponse(
        {
            "prefix": ctx.settings.key_prefix,
            "storage": ctx.files.description,
            "auth": ctx.auth_mode,
            "counts": await ctx.listing.counts(),
            "dead_letters": await typed(client.redis).zcard(client.keys.dead_letter_order),
            "max_upload_bytes": ctx.settings.max_upload_bytes,
            "max_photos": MAX_PHOTOS,
            "max_request_bytes": body_limit(client),
        }
    )


async def sessions(request: Request) -> Response:
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        return _error(f"status must be one of {', '.join(STATUSES)}", 400)
    page = await _ctx(
        request
    ).listing.page(
        status=status,  # type: ignore[arg-type]  # checked above
        query=request.query_params.get("q", "")[:200],
        page=_int(request, "page", 1),
        per_page=_int(request, "per_page", 50),
    )
    return JSONResponse(page.model_dump(mode="json"))


async def session(request: Request) -> Response:
    ctx = _ctx(request)
    session_id = request.path_params["session_id"]
    if not valid_session_id(session_id):
        return _error("not a session id", 404)
    try:
        detail = await session_detail(ctx.client, session_id)
    except LookupError as exc:
        return _error(str(exc), 404)
    summaries = await ctx.listing.summaries([session_id])
    detail["summary"] = summaries[0].model_dump(mode="json") if summaries else None
    return JSONResponse(detail)


async def session_result(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    try:
        result = await _ctx(request).client.result(session_id)
    except LookupError as exc:
        return _error(str(exc), 404)
    return Response(result.model_dump_json(), media_type="application/json")


async def events(request: Request) -> Response:
    """Server-sent events: ``hello`` at once, then ``session`` (a session changed: its
    summary), ``deadletters`` and ``resync`` (reload: changes were dropped)."""
    ctx = _ctx(request)
    session_id = request.query_params.get("session") or None
    if session_id is not None and not valid_session_id(session_id):
        return _error("not a session id", 400)
    hub = ctx.hub
    sub = await hub.subscribe(session_id)

    async def stream() -> AsyncIterator[str]:
        try:
            yield "retry: 3000\nevent: hello\ndata: {}\n\n"
            while True:
                try:
                    message = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if message == CLOSED:
                    return
                yield message
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def action(
    handler: Callable[[Request, DashboardContext], Awaitable[dict[str, Any]]],
) -> Callable[[Request], Awaitable[Response]]:
    """A state change: POST with the token header, or 403; ActionError → its status."""

    async def run(request: Request) -> Response:
        ctx = _ctx(request)
        try:
            check_action(request.headers, request.cookies, ctx.token)
        except ActionRefused as exc:
            return _error(str(exc), 403)
        try:
            return JSONResponse(await handler(request, ctx))
        except (actions.ActionError, UploadRefused) as exc:
            return _error(str(exc), exc.status)

    return run


async def _create(request: Request, ctx: DashboardContext) -> dict[str, Any]:
    session_id, names = await submit_upload(request, ctx.client)
    await actions.audit(ctx.client, _who(request), "upload", session=session_id, photos=len(names))
    return {"session_id": session_id, "url": f"sessions/{session_id}", "files": names}


async def _retry(request: Request, ctx: DashboardContext) -> dict[str, Any]:
    return await actions.retry_one(ctx.client, request.path_params["letter_id"], _who(request))


async def _retry_all(request: Request, ctx: DashboardContext) -> dict[str, Any]:
    return await actions.retry_all(ctx.client, _who(request))


async def _discard(request: Request, ctx: DashboardContext) -> dict[str, Any]:
    return await actions.discard(ctx.client, request.path_params["letter_id"], _who(request))


async def dead_letters(request: Request) -> Response:
    return JSONResponse(await actions.dead_letters_view(_ctx(request).client))


async def system(request: Request) -> Response:
    return JSONResponse(await system_view(_ctx(request).client))


async def files(request: Request) -> Response:
    ctx = _ctx(request)
    return await ctx.files.response(request, ctx.client.redis)


Handler = Callable[[Request], Awaitable[Response]]
#: path, handler, methods, what it gives (``GET /api/`` lists these; README documents them).
DOCS: list[tuple[str, Handler, list[str], str]] = [
    ("/api/", index, ["GET"], "this list"),
    ("/api/overview", overview, ["GET"], "prefix, store, counts by status, dead letters"),
    ("/api/sessions", sessions, ["GET"],
     "a page of sessions, newest first: ?status=&q=&page=&per_page= (≤ 200)"),
    ("/api/sessions", action(_create), ["POST"],
     "start a session: multipart 'photos' files, optional 'metadata' JSON object"),
    ("/api/sessions/{session_id}", session, ["GET"],
     "one session: per photo counts, segments, warnings, errors, timings, files; events"),
    ("/api/sessions/{session_id}/result", session_result, ["GET"],
     "the result document (results.json)"),
    ("/api/events", events, ["GET"],
     "server-sent events: every session's changes (?session=ID: one session's)"),
    ("/api/dead-letters", dead_letters, ["GET"],
     "dead letters (newest first), grouped by cause, and the recent actions"),
    ("/api/dead-letters/retry-all", action(_retry_all), ["POST"],
     "replay every replayable dead letter"),
    ("/api/dead-letters/{letter_id:path}/retry", action(_retry), ["POST"],
     "replay one dead letter"),
    ("/api/dead-letters/{letter_id:path}/discard", action(_discard), ["POST"],
     "drop one dead letter"),
    ("/api/system", system, ["GET"],
     "queues (waiting, scheduled, running per role), workers, S3 breaker, Redis memory"),
    ("/files/{session_id}/results.json", files, ["GET"], "results.json from the store"),
    ("/files/{session_id}/{index:int}/{name}", files, ["GET"],
     "a photo's output (pipeline.vision.outputs: original, thumbnail_original, processed, "
     "thumbnail_processed and any registered)"),
]  # fmt: skip
ROUTES = [(path, handler, methods) for path, handler, methods, _what in DOCS]
