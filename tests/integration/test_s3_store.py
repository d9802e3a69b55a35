"""The S3 object store's requests against the instrumented S3 stub: one hash per body,
``Expect: 100-continue`` for large bodies only, and an endpoint resolution that botocore's
cache answers after the first key (pipeline/storage/sdk_tuning.py)."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from pipeline.settings import Settings
from pipeline.storage.s3 import S3ObjectStore
from pipeline.storage.sdk_tuning import UNREAD_CANDIDATES, unread_params
from pipeline.testing.s3stub import S3Stub
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration


@pytest.fixture
async def stub() -> AsyncIterator[S3Stub]:
    async with S3Stub() as server:
        yield server


@asynccontextmanager
async def started_store(
    make_settings: SettingsFactory, stub: S3Stub, **overrides: Any
) -> AsyncIterator[S3ObjectStore]:
    settings: Settings = make_settings(
        s3_endpoint_url=stub.endpoint, s3_create_bucket=True, **overrides
    )
    store = S3ObjectStore(settings)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def capture_put_headers(store: S3ObjectStore) -> list[dict[str, str]]:
    """The headers of every PutObject request the store sends, as sent."""
    seen: list[dict[str, str]] = []

    def before_send(request: Any, **_: Any) -> None:
        seen.append(
            {
                str(k).lower(): (v.decode() if isinstance(v, bytes) else str(v))
                for k, v in request.headers.items()
            }
        )

    store.client.meta.events.register("before-send.s3.PutObject", before_send)
    return seen


async def test_a_body_is_hashed_once_and_s3_still_checks_it(
    make_settings: SettingsFactory, stub: S3Stub
) -> None:
    async with started_store(make_settings, stub) as store:
        sent = capture_put_headers(store)
        body = os.urandom(200_000)
        sha = hashlib.sha256(body).hexdigest()
        result = await store.put("one/hash", body, content_type="x/y", sha256=sha)
        assert result.sha256 == sha
        [headers] = sent
        # the signature covers the checksum header, not a second hash of the body
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(sha)).decode()
        stored = stub.objects[(store.bucket, "one/hash")]
        assert stored.body == body
        assert stored.metadata["sha256"] == sha

        # a body that does not match the hash it travels with is refused by S3
        wrong = hashlib.sha256(b"another body").hexdigest()
        with pytest.raises(ClientError) as refused:
            await store.put("one/refused", body, content_type="x/y", sha256=wrong)
        assert refused.value.response["Error"]["Code"] == "BadDigest"
        assert (store.bucket, "one/refused") not in stub.objects


async def test_payload_signing_when_asked_for(make_settings: SettingsFactory, stub: S3Stub) -> None:
    async with started_store(make_settings, stub, s3_sign_payload=True) as store:
        sent = capture_put_headers(store)
        body = b"signed" * 1000
        await store.put("signed/body", body, content_type="x/y")
        assert sent[0]["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
        assert stub.objects[(store.bucket, "signed/body")].body == body


async def test_only_a_large_body_waits_for_100_continue(
    make_settings: SettingsFactory, stub: S3Stub
) -> None:
    """A body under s3_expect_continue_bytes goes with its headers (one round trip less); a
    larger one is still sent only once S3 accepts the request."""
    async with started_store(make_settings, stub, s3_expect_continue_bytes=1024 * 1024) as store:
        sent = capture_put_headers(store)
        small, large = os.urandom(64 * 1024), os.urandom(1024 * 1024)
        await store.put("expect/small", small, content_type="x/y")
        await store.put("expect/large", large, content_type="x/y")
        assert [h.get("expect") for h in sent] == [None, "100-continue"]
        assert stub.objects[(store.bucket, "expect/small")].body == small
        assert stub.objects[(store.bucket, "expect/large")].body == large

    async with started_store(make_settings, stub, s3_expect_continue_bytes=0) as always:
        sent = capture_put_headers(always)
        await always.put("expect/tiny", b"tiny", content_type="x/y")
        assert sent[0].get("expect") == "100-continue"


def count_ruleset_evaluations(store: S3ObjectStore) -> Callable[[], int]:
    """How often the S3 endpoint ruleset is evaluated (each miss of botocore's cache)."""
    ruleset = store.client._ruleset_resolver._provider.ruleset
    evaluate = ruleset.evaluate
    calls = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return evaluate(*args, **kwargs)

    ruleset.evaluate = counted
    return lambda: calls[0]


async def test_endpoint_is_resolved_once_for_many_keys(
    make_settings: SettingsFactory, stub: S3Stub
) -> None:
    async with started_store(make_settings, stub) as store:
        resolver = store.client._ruleset_resolver
        assert not set(UNREAD_CANDIDATES) & set(resolver._param_definitions)
        # the ruleset itself (what other clients share) keeps its declared parameters
        assert "Key" in resolver._provider.ruleset.parameters
        evaluations = count_ruleset_evaluations(store)
        for i in range(5):
            await store.put(f"cached/{i}", b"leaf %d" % i, content_type="x/y")
        assert evaluations() <= 1
        for i in range(5):
            assert stub.objects[(store.bucket, f"cached/{i}")].body == b"leaf %d" % i


def test_a_parameter_some_rule_reads_is_kept() -> None:
    declared = {"Bucket": {}, "Key": {}, "Prefix": {}, "CopySource": {}}
    ruleset = {
        "rules": [
            {
                "conditions": [{"fn": "isSet", "argv": [{"ref": "Key"}]}],
                "endpoint": {"url": {"ref": "Bucket"}},
            }
        ]
    }
    assert unread_params(declared, ruleset) == ["Prefix", "CopySource"]
    assert unread_params({"Bucket": {}}, ruleset) == []
