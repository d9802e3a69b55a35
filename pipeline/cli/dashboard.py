"""``plantpipe dashboard``: the web dashboard on its own (sessions live, photos with their
counts, dead letters, queues); also what ``plantpipe run --dashboard`` starts beside its
workers. Needs the ``[dashboard]`` extra (in ``[cpu]`` too)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.connect import PrefixOption
from pipeline.cli.errors import EXIT_USAGE, fail
from pipeline.cli.output import say
from pipeline.errors import ConfigurationError
from pipeline.logs import configure_logging
from pipeline.settings import Settings, get_settings

if TYPE_CHECKING:
    from pipeline.dashboard.server import Dashboard

HostOption = Annotated[
    str | None,
    typer.Option(
        "--host",
        help="address to listen on (default PLANTPIPE_DASHBOARD_HOST, "
        "127.0.0.1; beyond loopback PLANTPIPE_DASHBOARD_TOKEN is required)",
    ),
]
PortOption = Annotated[
    int | None,
    typer.Option(
        "--port",
        min=0,
        max=65535,
        help="port (default PLANTPIPE_DASHBOARD_PORT, 8080; 0 = any free one)",
    ),
]


def require_extra() -> None:
    """One ``error:`` line when the ``[dashboard]`` extra is not installed."""
    try:
        import pipeline.dashboard.server  # noqa: F401
    except ImportError as exc:
        raise fail(
            f"the dashboard needs the [dashboard] extra ({exc.name} is not installed): "
            "pip install 'plantpipe[dashboard]' (the [cpu] extra includes it)"
        ) from None


def make_dashboard(settings: Settings, host: str | None, port: int | None) -> Dashboard:
    """The server (not started); one ``error:`` line when the extra is missing or the
    address needs a token."""
    require_extra()
    from pipeline.dashboard.server import Dashboard

    try:
        return Dashboard(
            settings,
            host or settings.dashboard_host,
            settings.dashboard_port if port is None else port,
        )
    except ConfigurationError as exc:
        raise fail(exc.reason, EXIT_USAGE) from None


async def start_beside_run(settings: Settings, port: int | None) -> Dashboard:
    """The dashboard of ``plantpipe run --dashboard`` on loopback, started: on the port
    asked for (default PLANTPIPE_DASHBOARD_PORT), or any free one when that is taken."""
    board = make_dashboard(settings, "127.0.0.1", port)
    try:
        await board.start()
    except ConfigurationError as exc:
        if exc.code != "dashboard_port_taken" or port is not None:
            raise fail(exc.reason) from None
        say(f"port {board.port} is taken: the dashboard takes a free one")
        board = make_dashboard(settings, "127.0.0.1", 0)
        await board.start()
    return board


def describe(dashboard: Dashboard) -> str:
    ctx = dashboard.context
    actions = (
        "actions need PLANTPIPE_DASHBOARD_TOKEN"
        if ctx.auth_mode == "token"
        else "actions from its own pages only"
    )
    return f"dashboard: {dashboard.url} (store: {ctx.files.description}; {actions})"


async def _serve(settings: Settings, host: str | None, port: int | None) -> None:
    dashboard = make_dashboard(settings, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await dashboard.start()
        except ConfigurationError as exc:  # the port is taken, the address unusable
            raise fail(exc.reason, EXIT_USAGE) from None
        say(describe(dashboard))
        say(f"Redis {settings.redis_url}, key prefix {settings.key_prefix}; Ctrl-C stops")
        await dashboard.serve_until(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    say("dashboard stopped")


def dashboard(
    host: HostOption = None, port: PortOption = None, prefix: PrefixOption = None
) -> None:
    """Serve the web dashboard: sessions live, photos with their counts, uploads, dead
    letters (retry, discard), queues and workers; a JSON API under /api/."""
    settings = get_settings() if prefix is None else Settings(key_prefix=prefix)
    configure_logging(settings)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # its start-up chatter
    asyncio.run(_serve(settings, host, port))
