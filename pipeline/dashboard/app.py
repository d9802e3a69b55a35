"""``create_app(settings)``: the dashboard as a Starlette app — run it with ``plantpipe
dashboard`` or mount it in your own ASGI service (FastAPI, Starlette)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.dashboard import api
from pipeline.dashboard.context import DashboardContext
from pipeline.dashboard.files import valid_session_id
from pipeline.dashboard.pages import PAGES, STATIC, render
from pipeline.dashboard.security import COOKIE, SecurityMiddleware, new_cookie_value
from pipeline.logs import get_logger
from pipeline.settings import Settings, get_settings

log = get_logger("pipeline.dashboard")
Handler = Callable[[Request], Awaitable[Response]]


class Assets(StaticFiles):
    """The shipped assets; revalidated on every use (304 when unchanged)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/") + "/"


def page_route(key: str) -> Handler:
    page = PAGES[key]

    async def handler(request: Request) -> Response:
        ctx: DashboardContext = request.app.state.dashboard
        argument = request.path_params.get("session_id", "")
        if argument and not valid_session_id(argument):
            return HTMLResponse(
                "<!doctype html><title>not found</title><p>No such session id.</p>", status_code=404
            )
        body = render(
            page,
            base=_base(request),
            auth=ctx.auth_mode,
            prefix=ctx.settings.key_prefix,
            argument=argument,
        )
        response = HTMLResponse(body, headers={"Cache-Control": "no-store"})
        if ctx.auth_mode == "cookie" and len(request.cookies.get(COOKIE, "")) < 16:
            response.set_cookie(
                COOKIE, new_cookie_value(), path=_base(request), samesite="strict", httponly=False
            )
        return response

    return handler


def guarded(handler: Handler) -> Handler:
    """Open the context first; Redis away → 503; anything unexpected → 500, one line."""

    async def run(request: Request) -> Response:
        ctx: DashboardContext = request.app.state.dashboard
        try:
            await ctx.ready()
            return await handler(request)
        except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
            return JSONResponse(
                {"error": f"Redis is not reachable: {exc}; the dashboard answers again once it is"},
                status_code=503,
            )
        except Exception as exc:
            log.exception("dashboard.error", path=request.url.path)
            message = f"internal error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            return JSONResponse({"error": message}, status_code=500)

    return run


def create_app(
    settings: Settings | None = None,
    *,
    allowed_hosts: Iterable[str] | None = None,
) -> Starlette:
    """The dashboard for ``settings`` (default: ``PLANTPIPE_*`` from the environment).

    Actions need ``PLANTPIPE_DASHBOARD_TOKEN`` when it is set; without it, the pages' own
    cookie (see :mod:`pipeline.dashboard.security`). ``allowed_hosts``: ``Host`` names to
    answer (``plantpipe dashboard`` passes the loopback names when bound to loopback).

    Mounted in a FastAPI/Starlette service, run its lifespan from yours
    (``app.router.lifespan_context(app)``) so Redis is closed with your service; without
    that, it connects at its first request."""
    settings = settings or get_settings()
    ctx = DashboardContext(settings, token=settings.dashboard_token)
    routes = [
        Route("/", page_route("sessions")),
        Route("/sessions/{session_id}", page_route("session")),
        Route("/upload", page_route("upload")),
        Route("/dead-letters", page_route("dead-letters")),
        Route("/system", page_route("system")),
        *(Route(path, guarded(handler), methods=methods) for path, handler, methods in api.ROUTES),
        Mount("/static", Assets(directory=str(STATIC)), name="static"),
    ]
    hosts = frozenset(h.lower() for h in allowed_hosts) if allowed_hosts is not None else None
    app = Starlette(
        routes=routes,
        lifespan=ctx.lifespan,
        middleware=[Middleware(SecurityMiddleware, csp=ctx.csp, allowed_hosts=hosts)],
    )
    app.state.dashboard = ctx
    return app
