"""README's FastAPI example (tests/examples/fastapi_app.py, embedded verbatim) against real
in-process workers, through httpx's ASGI transport with the app's lifespan running."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from pipeline import PipelineClient, Settings, get_settings
from tests.examples.test_kit_example import nursery_photo
from tests.unit.test_intake import png_declaring

pytestmark = pytest.mark.asyncio


@pytest.fixture
def app_env(plantpipe_settings: Settings) -> Iterator[None]:
    """The app reads PLANTPIPE_* from the environment: point it at the test's settings."""
    names = {
        "PLANTPIPE_REDIS_URL": plantpipe_settings.redis_url,
        "PLANTPIPE_KEY_PREFIX": plantpipe_settings.key_prefix,
        "PLANTPIPE_S3_BUCKET": plantpipe_settings.s3_bucket,
        "PLANTPIPE_S3_ENDPOINT_URL": str(plantpipe_settings.s3_endpoint_url),
    }
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    forget_settings()
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    forget_settings()


def forget_settings() -> None:
    """get_settings() reads the environment once per process: make it read it again."""
    clear = getattr(get_settings, "cache_clear", None)
    if clear is not None:
        clear()


async def test_fastapi_example(app_env: None, plantpipe_client: PipelineClient) -> None:
    from tests.examples.fastapi_app import app

    async with app.router.lifespan_context(app):
        client: PipelineClient = app.state.client
        assert client.settings.key_prefix == plantpipe_client.settings.key_prefix
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            files = [("photos", ("bench.jpg", nursery_photo(), "image/jpeg"))]
            created = await http.post("/sessions", files=files)
            assert created.status_code == 202, created.text
            session_id = created.json()["session_id"]

            not_a_photo = [("photos", ("x.jpg", b"hello", "image/jpeg"))]
            bad = await http.post("/sessions", files=not_a_photo)
            assert bad.status_code == 400
            assert "not a JPEG, PNG or WebP" in bad.json()["detail"]

            # photos checked in full before anything is stored: 400, never a 202 that fails later
            whole = nursery_photo()
            for data, needle in (
                (whole[: len(whole) // 2], "truncated"),
                (png_declaring(60_000, 60_000), "3600000000 pixels"),
            ):
                refused = await http.post("/sessions", files=[("photos", ("p", data, None))])
                assert refused.status_code == 400, refused.text
                assert needle in refused.json()["detail"]

            unknown = await http.get("/sessions/no-such-session")
            assert unknown.status_code == 404
            assert "no session" in unknown.json()["detail"]

            await plantpipe_client.wait(session_id, timeout=120)
            shown = await http.get(f"/sessions/{session_id}")
            assert shown.status_code == 200
            assert shown.json()["status"] == "completed"
    # lifespan ended: the app's client is closed
    with pytest.raises(RuntimeError, match="not connected"):
        _ = client.redis


async def test_fastapi_example_answers_503_while_redis_is_too_full(
    app_env: None, plantpipe_client: PipelineClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis near maxmemory: the example answers 503 with Retry-After and stores nothing.
    (The test Redis gets a maxmemory far above its use, and the share new work may fill
    is made tiny, so the refusal comes without filling a shared Redis.)"""
    from tests.examples.fastapi_app import app

    monkeypatch.setenv("PLANTPIPE_REDIS_SUBMIT_MAX_USED", "0.000000001")
    forget_settings()
    redis = plantpipe_client.redis
    before = (await redis.config_get("maxmemory"))["maxmemory"]
    await redis.config_set("maxmemory", str(64 * 2**30))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                files = [("photos", ("bench.jpg", nursery_photo(), "image/jpeg"))]
                full = await http.post("/sessions", files=files)
    finally:
        await redis.config_set("maxmemory", before)
        forget_settings()
    assert full.status_code == 503, full.text
    assert full.headers["retry-after"] == "30"
    assert "PLANTPIPE_REDIS_SUBMIT_MAX_USED" in full.json()["detail"]
    prefix = plantpipe_client.settings.key_prefix
    assert [k async for k in redis.scan_iter(match=f"{prefix}:session:*")] == []
