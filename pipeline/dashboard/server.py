"""Serving the dashboard with uvicorn: on its own (``plantpipe dashboard``) or beside the
embedded workers of ``plantpipe run --dashboard``, inside the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator

import uvicorn

from pipeline.dashboard.app import create_app
from pipeline.dashboard.context import DashboardContext
from pipeline.dashboard.security import LOOPBACK_HOSTS, check_bind, is_loopback
from pipeline.errors import ConfigurationError
from pipeline.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: the caller decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


class Dashboard:
    """One served dashboard: ``await start()``, ``url``, ``await stop()``."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        check_bind(host, settings.dashboard_token)
        self.host = host
        self.port = port
        loopback = is_loopback(host)
        self.app = create_app(settings, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def context(self) -> DashboardContext:
        ctx: DashboardContext = self.app.state.dashboard
        return ctx

    @property
    def url(self) -> str:
        return url_of(self.host, self.port)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on every accepted connection (it
        # checks the protocol): without it a keep-alive response waits ~40 ms for an ACK
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"port {self.port} on {self.host} is taken: choose another with --port",
                    code="dashboard_port_taken",
                ) from exc
            raise ConfigurationError(
                f"cannot listen on {self.host}:{self.port}: {exc}", code="dashboard_bind_failed"
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        return sock

    async def start(self) -> None:
        """Connect (Redis, the store), listen, serve in the background (once)."""
        if self._task is not None:
            return
        await self.context.ready()  # a Redis problem is said before anything listens
        self._socket = self._bind()
        config = uvicorn.Config(
            self.app,
            log_config=None,  # our logging (pipeline.logs) renders uvicorn's records too
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
            ws="none",
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the start-up error
                raise ConfigurationError(
                    "the dashboard stopped while starting", code="dashboard_start_failed"
                )
            await asyncio.sleep(0.02)

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Start, serve until ``stop`` is set (or the server ends), stop."""
        await self.start()
        assert self._task is not None
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            await self.stop()

    async def stop(self) -> None:
        """End the open live streams, then stop the server (3 s grace for the rest; its
        lifespan closes Redis and the store)."""
        await self.context.end_streams()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        if self._socket is not None:
            self._socket.close()
        self._task = None
