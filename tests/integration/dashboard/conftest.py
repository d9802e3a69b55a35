"""What the dashboard's integration tests share: a served dashboard on a free loopback port
(the real uvicorn server of ``plantpipe dashboard``) and an HTTP client that keeps its
cookie, each on the test's own key prefix (removed afterwards)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from pipeline.dashboard.security import COOKIE, TOKEN_HEADER
from pipeline.dashboard.server import Dashboard
from pipeline.embedded import drop_prefix
from pipeline.settings import Settings
from tests.conftest import SettingsFactory


@dataclass
class Served:
    board: Dashboard
    http: httpx.AsyncClient
    settings: Settings

    async def action_headers(self) -> dict[str, str]:
        """The header a page sends with an action (after loading a page for the cookie)."""
        if self.settings.dashboard_token is not None:
            return {TOKEN_HEADER: self.settings.dashboard_token}
        if COOKIE not in self.http.cookies:
            (await self.http.get("/")).raise_for_status()
        return {TOKEN_HEADER: self.http.cookies[COOKIE]}


ServeFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(make_settings: SettingsFactory) -> AsyncIterator[ServeFactory]:
    started: list[Served] = []

    async def start(**overrides: Any) -> Served:
        settings = make_settings(**overrides)
        board = Dashboard(settings, "127.0.0.1", 0)
        await board.start()
        http = httpx.AsyncClient(base_url=board.url, timeout=20)
        served = Served(board, http, settings)
        started.append(served)
        return served

    yield start
    for served in started:
        await served.http.aclose()
        await served.board.stop()
        await drop_prefix(served.settings.redis_url, served.settings.key_prefix)


def jpeg(width: int = 120, height: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (60, 140, 60)).save(buf, format="JPEG")
    return buf.getvalue()
