"""The dashboard's guards on a real server: headers on every response, where it may bind, who
may act (cookie and token modes), Host names on loopback, no traversal through any route."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from pipeline.dashboard.security import (
    COOKIE,
    TOKEN_HEADER,
    check_bind,
    content_security_policy,
    host_allowed,
    is_loopback,
)
from pipeline.errors import ConfigurationError
from pipeline.schemas import ArtifactRecord
from pipeline.state.artifacts import ArtifactStore
from pipeline.state.keys import Keys
from pipeline.state.sessions import SessionStore
from tests.integration.dashboard.conftest import ServeFactory

pytestmark = pytest.mark.integration
TOKEN = "a-long-enough-dashboard-token"


async def test_every_response_carries_the_security_headers(serve: ServeFactory) -> None:
    served = await serve()
    page = await served.http.get("/")
    assert page.status_code == 200 and '<base href="/">' in page.text
    assert len(page.cookies[COOKIE]) >= 16  # the double-submit cookie
    assert "samesite=strict" in page.headers["set-cookie"].lower()
    for path in (
        "/",
        "/sessions/abc",
        "/upload",
        "/dead-letters",
        "/system",
        "/api/",
        "/api/sessions",
        "/static/common.js",
        "/api/sessions/nope",
        "/files/x/0/original",
    ):
        resp = await served.http.get(path)
        csp = resp.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, path
        assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp, path
        assert resp.headers["x-content-type-options"] == "nosniff", path
        assert resp.headers["x-frame-options"] == "DENY", path
    bad = await served.http.get("/sessions/<script>")
    assert bad.status_code == 404 and "<script>" not in bad.text


async def test_only_loopback_host_names_are_answered_on_loopback(serve: ServeFactory) -> None:
    served = await serve()
    rebinding = await served.http.get("/api/overview", headers={"Host": "evil.example:8080"})
    assert rebinding.status_code == 421
    for host in ("localhost:1234", "127.0.0.1", "[::1]:80"):
        assert (await served.http.get("/api/", headers={"Host": host})).status_code == 200


def test_public_binds_need_a_token() -> None:
    with pytest.raises(ConfigurationError, match="PLANTPIPE_DASHBOARD_TOKEN"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigurationError, match="without a token"):
        check_bind("::", None)
    check_bind("0.0.0.0", TOKEN)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
        assert is_loopback(host)
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert host_allowed("LOCALHOST:8080", frozenset({"localhost"}))
    assert not host_allowed("localhost.evil.example", frozenset({"localhost"}))
    assert "https://b.s3.amazonaws.com" in content_security_policy(["https://b.s3.amazonaws.com"])


async def test_actions_need_the_pages_cookie_repeated_in_the_header(serve: ServeFactory) -> None:
    served = await serve()
    http = served.http
    (await http.get("/")).raise_for_status()  # the page sets the cookie
    path = "/api/dead-letters/retry-all"
    refused = await http.post(path)
    assert refused.status_code == 403
    assert "X-Plantpipe-Token" in refused.json()["error"]
    wrong = await http.post(path, headers={TOKEN_HEADER: "x" * 32})
    assert wrong.status_code == 403
    # the cookie alone (what a cross-site form would carry) is not enough
    async with httpx.AsyncClient(base_url=served.board.url, cookies=http.cookies) as form:
        assert (await form.post(path)).status_code == 403
    ok = await http.post(path, headers=await served.action_headers())
    assert ok.status_code == 200, ok.text
    assert ok.json()["replayed"] == []
    assert (await http.get(path)).status_code == 405  # no state change through GET


async def test_with_a_token_actions_need_it(serve: ServeFactory) -> None:
    served = await serve(dashboard_token=TOKEN)
    http = served.http
    page = await http.get("/")
    assert 'content="token"' in page.text and COOKIE not in page.cookies
    path = "/api/dead-letters/retry-all"
    missing = await http.post(path)
    assert missing.status_code == 403 and "needs the dashboard token" in missing.json()["error"]
    wrong = await http.post(path, headers={TOKEN_HEADER: TOKEN + "x"})
    assert wrong.status_code == 403 and "wrong dashboard token" in wrong.json()["error"]
    assert (await http.post(path, headers={TOKEN_HEADER: TOKEN})).status_code == 200


async def _uploaded(served: Any, key: str, content: bytes, session: str = "s1") -> str:
    """A session whose photo 0 has an uploaded thumbnail at ``key`` (local store)."""
    settings = served.settings
    redis = served.board.context.client.redis
    await SessionStore(redis, settings).create(session, 1)
    artifact = f"{session}:0:thumbnail_original"
    record = ArtifactRecord(
        artifact_id=artifact,
        key=key,
        content_type="image/jpeg",
        size=len(content),
        session_id=session,
    )
    await ArtifactStore(redis, settings).register([record], session_id=session)
    await ArtifactStore(redis, settings).transition(artifact, "uploaded", session_id=session)
    return artifact


async def test_no_route_reads_outside_its_folder(serve: ServeFactory, tmp_path: Any) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "secret.txt").write_text("not for the browser")
    (store / "s1").mkdir()
    (store / "s1" / "thumbnail_original.jpg").write_bytes(b"\xff\xd8thumb")
    served = await serve(storage=str(store))
    http = served.http
    await _uploaded(served, "s1/thumbnail_original.jpg", b"\xff\xd8thumb")
    good = await http.get("/files/s1/0/thumbnail_original")
    assert good.status_code == 200 and good.content == b"\xff\xd8thumb"
    assert good.headers["content-type"] == "image/jpeg"
    attempts = [
        "/files/..%2F..%2Fsecret.txt/0/original",
        "/files/s1/0/..%2F..%2Fsecret.txt",
        "/files/s1/0/%2e%2e",
        "/files/%2e%2e/0/thumbnail_original",
        "/static/..%2F..%2Fsecret.txt",
        "/static/%2e%2e/api.py",
        "/static/../app.py",
        "/files/s1/-1/thumbnail_original",
    ]
    for path in attempts:
        resp = await http.get(httpx.URL(path))
        assert resp.status_code == 404, (path, resp.status_code)
        assert b"not for the browser" not in resp.content and b"import" not in resp.content
    # even a session record that was tampered with cannot point a route outside the store
    keys = Keys.from_settings(served.settings)
    redis = served.board.context.client.redis
    await redis.hset(keys.session("s1"), "artkey:s1:0:thumbnail_original", "../secret.txt")
    tampered = await http.get("/files/s1/0/thumbnail_original")
    assert tampered.status_code == 404 and b"not for the browser" not in tampered.content


async def test_s3_files_are_presigned_redirects(serve: ServeFactory, localstack: str) -> None:
    served = await serve()
    await _uploaded(served, "s1/thumbnail_original.jpg", b"x")
    resp = await served.http.get("/files/s1/0/thumbnail_original")
    assert resp.status_code == 302
    location = resp.headers["location"]
    bucket = served.settings.s3_bucket
    assert location.startswith(f"{localstack}/{bucket}/s1/thumbnail_original.jpg?")
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=900" in location
    again = await served.http.get("/files/s1/0/thumbnail_original")
    assert again.headers["location"] == location  # reused: the browser's cache works
    csp = resp.headers["content-security-policy"]
    assert f"img-src 'self' data: blob: {localstack}" in csp
    pending = await served.http.get("/files/s1/0/original")
    assert pending.status_code == 404 and "no original file" in pending.json()["error"]


async def test_user_strings_stay_strings_in_the_api(serve: ServeFactory) -> None:
    """The pages insert text only (textContent, checked in the browser tests); the API hands
    strings back exactly as given, JSON-encoded."""
    served = await serve()
    evil = "<img src=x onerror=alert(1)>"
    redis = served.board.context.client.redis
    await SessionStore(redis, served.settings).create("s9", 1, {"note": evil})
    resp = await served.http.get("/api/sessions")
    assert resp.headers["content-type"] == "application/json"
    [row] = resp.json()["sessions"]
    assert row["metadata"]["note"] == evil
    assert json.loads(resp.text)["sessions"][0]["metadata"]["note"] == evil
