"""What one dashboard app holds for its lifetime: the client (Redis), the object store's
reader, the feed hub, and who may act. Opened by the app's lifespan — or, where the app is
mounted in a service whose lifespan does not run it, at the first request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pipeline.client import PipelineClient
from pipeline.dashboard.files import FileSource
from pipeline.dashboard.hub import FeedHub
from pipeline.dashboard.security import content_security_policy
from pipeline.settings import Settings
from pipeline.state.listing import SessionListing


class DashboardContext:
    def __init__(self, settings: Settings, *, token: str | None) -> None:
        self.settings = settings
        self.token = token
        self.client = PipelineClient(settings)
        self.files = FileSource(settings)
        self._hub: FeedHub | None = None
        self._lock = asyncio.Lock()
        self._open = False
        self._closing = False
        self._csp = content_security_policy()

    @property
    def auth_mode(self) -> str:
        """``token``: actions need PLANTPIPE_DASHBOARD_TOKEN; ``cookie``: the page's own."""
        return "token" if self.token is not None else "cookie"

    def csp(self) -> str:
        return self._csp

    @property
    def listing(self) -> SessionListing:
        return SessionListing(self.client.redis, self.settings)

    @property
    def hub(self) -> FeedHub:
        if self._closing:
            raise ConnectionError("the dashboard is shutting down")
        if self._hub is None:
            self._hub = FeedHub(self.client.redis, self.listing, self.client.keys.feed)
        return self._hub

    async def ready(self) -> None:
        """Open everything once (the lifespan does it; a mounted app's first request too)."""
        async with self._lock:
            if self._open:
                return
            await self.client.connect()
            try:
                await self.files.start()
            except BaseException:
                await self.client.close()
                raise
            self._csp = content_security_policy(self.files.origins)
            self._open = True

    async def end_streams(self) -> None:
        """End every open live stream (before a server stops: they never end by themselves)."""
        self._closing = True
        if self._hub is not None:
            await self._hub.close()
            self._hub = None

    async def close(self) -> None:
        async with self._lock:
            if self._hub is not None:
                await self._hub.close()
                self._hub = None
            if self._open:
                await self.files.close()
                await self.client.close()
            self._open = False

    @asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        await self.ready()
        try:
            yield
        finally:
            await self.close()
