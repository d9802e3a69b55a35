"""README's mounted-dashboard example (tests/examples/fastapi_dashboard.py, embedded verbatim),
served by uvicorn on a free loopback port, against real in-process workers and LocalStack:
the pages under /dashboard/, an upload, the session followed live to completed, its
thumbnail through the presigned redirect."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from pipeline import PipelineClient
from pipeline.dashboard.security import COOKIE, TOKEN_HEADER
from tests.examples.test_fastapi_example import app_env  # the same environment fixture
from tests.examples.test_kit_example import nursery_photo

__all__ = ["app_env"]
pytestmark = pytest.mark.asyncio


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test decides when it stops
        yield


@contextlib.asynccontextmanager
async def served(app: Any, dashboard: Any) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await dashboard.state.dashboard.end_streams()  # open streams end first
        await task


async def events(http: httpx.AsyncClient, session_id: str) -> AsyncIterator[dict[str, Any]]:
    async with http.stream(
        "GET", f"/dashboard/api/events?session={session_id}", timeout=None
    ) as resp:
        kind = ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "session":
                yield json.loads(line[6:])


async def test_dashboard_mounted_in_fastapi(
    app_env: None, plantpipe_client: PipelineClient
) -> None:
    sys.modules.pop("tests.examples.fastapi_dashboard", None)  # reads the environment anew
    example = importlib.import_module("tests.examples.fastapi_dashboard")
    async with (
        served(example.app, example.dashboard) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.get("/health")).json() == {"status": "ok"}
        page = await http.get("/dashboard/")
        assert page.status_code == 200 and '<base href="/dashboard/">' in page.text
        assert "path=/dashboard/" in page.headers["set-cookie"].lower()
        assert (await http.get("/dashboard/static/sessions.js")).status_code == 200
        files = [("photos", ("bench-A12.jpg", nursery_photo(), "image/jpeg"))]
        created = await http.post(
            "/dashboard/api/sessions", files=files, headers={TOKEN_HEADER: http.cookies[COOKIE]}
        )
        assert created.status_code == 200, created.text
        session_id = created.json()["session_id"]

        async with asyncio.timeout(120):  # followed live, from the stream
            async for change in events(http, session_id):
                summary = change["summary"]
                if summary["status"] == "completed" and summary["artifacts_ready"]:
                    break
        assert summary["detected"] > 0 and summary["thumbnail"] == "thumbnail_processed"

        detail = (await http.get(f"/dashboard/api/sessions/{session_id}")).json()
        photo = detail["photos"][0]
        assert photo["name"] == "bench-A12.jpg" and photo["detected"] == summary["detected"]
        thumb = await http.get(f"/dashboard/{photo['files']['thumbnail_original']['url']}")
        assert thumb.status_code == 302  # to the object store, presigned
        stored = await http.get(thumb.headers["location"])
        assert stored.status_code == 200 and stored.content[:2] == b"\xff\xd8"
        record = await plantpipe_client.status(session_id)
        assert record.metadata["photo.0"] == "bench-A12.jpg"
    assert not example.dashboard.state.dashboard._open  # the lifespan closed its Redis
