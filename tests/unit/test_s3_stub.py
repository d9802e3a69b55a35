"""The in-memory S3 stub (pipeline/testing/s3stub) against real aioboto3 and boto3 clients."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import signal
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aioboto3
import aiohttp
import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError

from pipeline.testing.s3stub import S3Stub, decode_aws_chunked

REPO = Path(__file__).resolve().parents[2]
BUCKET = "stub-bucket"
MIB = 1024 * 1024

# ``retries={"max_attempts": 1}`` would still allow one retry (botocore counts retries
# there, so 2 attempts in total); ``total_max_attempts`` counts attempts, so every call
# below is exactly one HTTP request and the stub's counters are exact.
NO_RETRY: dict[str, Any] = {"total_max_attempts": 1}


def client_config(retries: dict[str, Any] | None = None) -> Config:
    return Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries=retries if retries is not None else NO_RETRY,
        max_pool_connections=50,
    )


def client_kwargs(endpoint: str, retries: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "config": client_config(retries),
    }


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def http_status(exc: ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.fixture
async def stub() -> AsyncIterator[S3Stub]:
    async with S3Stub() as server:
        yield server


@pytest.fixture
async def s3(stub: S3Stub) -> AsyncIterator[Any]:
    async with aioboto3.Session().client("s3", **client_kwargs(stub.endpoint)) as client:
        await client.create_bucket(Bucket=BUCKET)
        stub.reset_stats()
        yield client


@contextmanager
def sync_client(endpoint: str, retries: dict[str, Any] | None = None) -> Iterator[Any]:
    client = boto3.client("s3", **client_kwargs(endpoint, retries))
    try:
        yield client
    finally:
        client.close()


# ---------------------------------------------------------------- objects and buckets


async def test_object_roundtrip(stub: S3Stub, s3: Any) -> None:
    body = os.urandom(300_000)
    put = await s3.put_object(
        Bucket=BUCKET,
        Key="photos/2024/a b+c%.jpg",
        Body=body,
        ContentType="image/jpeg",
        Metadata={"Plant-Id": "p-17", "camera": "A"},
        CacheControl="max-age=60",
    )
    md5 = f'"{hashlib.md5(body).hexdigest()}"'
    assert put["ETag"] == md5

    stored = stub.objects[(BUCKET, "photos/2024/a b+c%.jpg")]
    assert stored.body == body
    assert stored.content_type == "image/jpeg"
    assert stored.metadata == {"plant-id": "p-17", "camera": "A"}
    assert stored.etag == md5

    got = await s3.get_object(Bucket=BUCKET, Key="photos/2024/a b+c%.jpg")
    async with got["Body"] as stream:
        assert await stream.read() == body
    assert got["ContentType"] == "image/jpeg"
    assert got["ContentLength"] == len(body)
    assert got["ETag"] == md5
    assert got["Metadata"] == {"plant-id": "p-17", "camera": "A"}
    assert got["CacheControl"] == "max-age=60"

    head = await s3.head_object(Bucket=BUCKET, Key="photos/2024/a b+c%.jpg")
    assert head["ContentLength"] == len(body)
    assert head["ContentType"] == "image/jpeg"
    assert head["ETag"] == md5
    assert head["Metadata"] == {"plant-id": "p-17", "camera": "A"}

    await s3.put_object(Bucket=BUCKET, Key="other", Body=b"")
    listed = await s3.list_objects_v2(Bucket=BUCKET, Prefix="photos/")
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed["Contents"]] == [
        ("photos/2024/a b+c%.jpg", len(body), md5)
    ]
    empty = await s3.head_object(Bucket=BUCKET, Key="other")
    assert empty["ContentLength"] == 0

    await s3.delete_object(Bucket=BUCKET, Key="photos/2024/a b+c%.jpg")
    with pytest.raises(ClientError) as missing:
        await s3.get_object(Bucket=BUCKET, Key="photos/2024/a b+c%.jpg")
    assert error_code(missing.value) == "NoSuchKey"
    assert http_status(missing.value) == 404
    with pytest.raises(ClientError) as missing_head:
        await s3.head_object(Bucket=BUCKET, Key="photos/2024/a b+c%.jpg")
    assert http_status(missing_head.value) == 404
    # Deleting a missing key succeeds, as on S3.
    await s3.delete_object(Bucket=BUCKET, Key="never-there")

    assert stub.stats.by_op["PutObject"] == 2
    assert stub.stats.by_op["GetObject"] == 2
    assert stub.stats.by_op["HeadObject"] == 3
    assert stub.stats.by_op["DeleteObject"] == 2
    assert stub.stats.by_op["ListObjectsV2"] == 1
    assert stub.stats.bytes_in == len(body)
    assert stub.stats.bytes_out == len(body)
    assert stub.stats.in_flight == 0


async def test_list_objects_v2_pagination_and_delimiter(s3: Any) -> None:
    keys = [f"plants/{i:03d}.png" for i in range(25)] + [
        "plants/sub/x.png",
        "plants/sub/y.png",
        "plants/tab\tand space+plus&amp.png",
        "zzz.txt",
    ]
    await asyncio.gather(*(s3.put_object(Bucket=BUCKET, Key=key, Body=b"k") for key in keys))

    seen: list[str] = []
    pages = 0
    async for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="plants/", PaginationConfig={"PageSize": 10}
    ):
        pages += 1
        seen.extend(o["Key"] for o in page.get("Contents", []))
    assert seen == sorted(k for k in keys if k.startswith("plants/"))
    assert pages == 3

    shallow = await s3.list_objects_v2(Bucket=BUCKET, Prefix="plants/", Delimiter="/")
    assert [p["Prefix"] for p in shallow["CommonPrefixes"]] == ["plants/sub/"]
    assert len(shallow["Contents"]) == 26
    assert shallow["KeyCount"] == 27

    # A common prefix is not repeated across pages.
    prefixes: list[str] = []
    contents: list[str] = []
    async for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Delimiter="/", PaginationConfig={"PageSize": 1}
    ):
        prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        contents.extend(o["Key"] for o in page.get("Contents", []))
    assert prefixes == ["plants/"]
    assert contents == ["zzz.txt"]

    after = await s3.list_objects_v2(Bucket=BUCKET, StartAfter="plants/023.png", MaxKeys=2)
    assert [o["Key"] for o in after["Contents"]] == ["plants/024.png", "plants/sub/x.png"]
    assert after["IsTruncated"] is True

    v1 = await s3.list_objects(Bucket=BUCKET, Prefix="plants/s")
    assert [o["Key"] for o in v1["Contents"]] == ["plants/sub/x.png", "plants/sub/y.png"]


async def test_bucket_lifecycle_and_errors(stub: S3Stub, s3: Any) -> None:
    await s3.create_bucket(Bucket="second-bucket")
    listed = await s3.list_buckets()
    assert [b["Name"] for b in listed["Buckets"]] == ["second-bucket", BUCKET]
    await s3.head_bucket(Bucket="second-bucket")

    with pytest.raises(ClientError) as dup:
        await s3.create_bucket(Bucket="second-bucket")
    assert error_code(dup.value) == "BucketAlreadyOwnedByYou"
    assert http_status(dup.value) == 409

    await s3.put_object(Bucket="second-bucket", Key="k", Body=b"v")
    with pytest.raises(ClientError) as not_empty:
        await s3.delete_bucket(Bucket="second-bucket")
    assert error_code(not_empty.value) == "BucketNotEmpty"
    await s3.delete_object(Bucket="second-bucket", Key="k")
    await s3.delete_bucket(Bucket="second-bucket")
    assert "second-bucket" not in stub.buckets

    for call in (
        s3.put_object(Bucket="no-such-bucket", Key="k", Body=b"v"),
        s3.get_object(Bucket="no-such-bucket", Key="k"),
        s3.list_objects_v2(Bucket="no-such-bucket"),
        s3.create_multipart_upload(Bucket="no-such-bucket", Key="k"),
        s3.delete_bucket(Bucket="no-such-bucket"),
    ):
        with pytest.raises(ClientError) as no_bucket:
            await call
        assert error_code(no_bucket.value) == "NoSuchBucket"
        assert http_status(no_bucket.value) == 404
    with pytest.raises(ClientError) as head_missing:
        await s3.head_bucket(Bucket="no-such-bucket")
    assert http_status(head_missing.value) == 404  # HEAD answers carry no body

    with pytest.raises(ClientError) as unsupported:
        await s3.copy_object(
            Bucket=BUCKET, Key="copy", CopySource={"Bucket": BUCKET, "Key": "missing"}
        )
    assert error_code(unsupported.value) == "NotImplemented"
    assert http_status(unsupported.value) == 501


async def test_error_document_is_s3_xml(stub: S3Stub) -> None:
    url = f"{stub.endpoint}/missing-bucket/some/key"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 404
        assert resp.headers["Content-Type"].startswith("application/xml")
        assert resp.headers["x-amz-request-id"]
        root = ElementTree.fromstring(await resp.read())
    assert root.tag == "Error"
    assert root.findtext("Code") == "NoSuchBucket"
    assert root.findtext("Message") == "The specified bucket does not exist"
    assert root.findtext("BucketName") == "missing-bucket"


async def test_content_md5_is_checked(stub: S3Stub, s3: Any) -> None:
    body = b"leaf" * 1000
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    await s3.put_object(Bucket=BUCKET, Key="checked", Body=body, ContentMD5=good)
    assert stub.objects[(BUCKET, "checked")].body == body

    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as mismatch:
        await s3.put_object(Bucket=BUCKET, Key="rejected", Body=body, ContentMD5=bad)
    assert error_code(mismatch.value) == "BadDigest"
    assert http_status(mismatch.value) == 400
    assert (BUCKET, "rejected") not in stub.objects


async def test_signed_payload_hash_is_checked(stub: S3Stub, s3: Any) -> None:
    """As S3: a body whose ``x-amz-content-sha256`` is a hash (a signed payload) must match
    it; UNSIGNED-PAYLOAD is taken as it is."""
    body = b"seedling" * 500
    await s3.put_object(Bucket=BUCKET, Key="signed", Body=body)  # botocore signs the payload
    assert stub.objects[(BUCKET, "signed")].body == body

    url = f"{stub.endpoint}/{BUCKET}"
    wrong = {"x-amz-content-sha256": hashlib.sha256(b"other").hexdigest()}
    unsigned = {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{url}/mismatch", data=body, headers=wrong) as resp:
            assert resp.status == 400
            root = ElementTree.fromstring(await resp.read())
        async with http.put(f"{url}/unsigned", data=body, headers=unsigned) as resp:
            assert resp.status == 200, await resp.text()
    assert root.findtext("Code") == "XAmzContentSHA256Mismatch"
    assert root.findtext("S3ComputedContentSHA256") == hashlib.sha256(body).hexdigest()
    assert (BUCKET, "mismatch") not in stub.objects
    assert stub.objects[(BUCKET, "unsigned")].body == body


async def test_range_get(s3: Any) -> None:
    body = bytes(range(256)) * 4
    await s3.put_object(Bucket=BUCKET, Key="ranged", Body=body)
    part = await s3.get_object(Bucket=BUCKET, Key="ranged", Range="bytes=10-19")
    async with part["Body"] as stream:
        assert await stream.read() == body[10:20]
    assert part["ContentRange"] == f"bytes 10-19/{len(body)}"
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    tail = await s3.get_object(Bucket=BUCKET, Key="ranged", Range="bytes=-5")
    async with tail["Body"] as stream:
        assert await stream.read() == body[-5:]
    with pytest.raises(ClientError) as unsatisfiable:
        await s3.get_object(Bucket=BUCKET, Key="ranged", Range=f"bytes={len(body)}-")
    assert error_code(unsatisfiable.value) == "InvalidRange"


async def test_aws_chunked_body(stub: S3Stub, s3: Any) -> None:
    data = os.urandom(70_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    first, second = data[:65536], data[65536:]

    def chunked(checksum: str) -> bytes:
        return (
            f"{len(first):x}\r\n".encode()
            + first
            + f"\r\n{len(second):x}\r\n".encode()
            + second
            + f"\r\n0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n".encode()
        )

    assert decode_aws_chunked(chunked(crc)) == (data, {"x-amz-checksum-crc32": crc})
    with pytest.raises(ValueError, match="aws-chunked"):
        decode_aws_chunked(b"zz\r\n")

    headers = {
        "Content-Encoding": "aws-chunked",
        "Content-Type": "application/octet-stream",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    async with aiohttp.ClientSession() as http:
        url = f"{stub.endpoint}/{BUCKET}/chunked"
        async with http.put(url, data=chunked(crc), headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        bad_crc = base64.b64encode(b"\0\0\0\0").decode()
        async with http.put(f"{url}-bad", data=chunked(bad_crc), headers=headers) as resp:
            assert resp.status == 400
            assert b"<Code>BadDigest</Code>" in await resp.read()
    stored = stub.objects[(BUCKET, "chunked")]
    assert stored.body == data
    assert "Content-Encoding" not in stored.headers
    assert (BUCKET, "chunked-bad") not in stub.objects


# ---------------------------------------------------------------- multipart


async def test_multipart_upload_20mib(stub: S3Stub, s3: Any) -> None:
    body = os.urandom(20 * MIB)
    part_size = 5 * MIB
    created = await s3.create_multipart_upload(
        Bucket=BUCKET, Key="big/photo.tif", ContentType="image/tiff", Metadata={"plant": "p1"}
    )
    upload_id = created["UploadId"]
    chunks = [body[i : i + part_size] for i in range(0, len(body), part_size)]
    etags = await asyncio.gather(
        *(
            s3.upload_part(
                Bucket=BUCKET, Key="big/photo.tif", UploadId=upload_id, PartNumber=n, Body=chunk
            )
            for n, chunk in enumerate(chunks, start=1)
        )
    )
    parts = [{"PartNumber": n, "ETag": r["ETag"]} for n, r in enumerate(etags, start=1)]
    done = await s3.complete_multipart_upload(
        Bucket=BUCKET, Key="big/photo.tif", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    md5s = b"".join(hashlib.md5(chunk).digest() for chunk in chunks)
    expected_etag = f'"{hashlib.md5(md5s).hexdigest()}-{len(chunks)}"'
    assert done["ETag"] == expected_etag
    assert not stub.uploads

    got = await s3.get_object(Bucket=BUCKET, Key="big/photo.tif")
    async with got["Body"] as stream:
        assert await stream.read() == body
    assert got["ContentLength"] == len(body)
    assert got["ContentType"] == "image/tiff"
    assert got["Metadata"] == {"plant": "p1"}
    assert got["ETag"] == expected_etag
    assert stub.stats.by_op["UploadPart"] == 4
    assert stub.stats.bytes_in >= len(body)


async def test_managed_upload_fileobj(stub: S3Stub, s3: Any) -> None:
    body = os.urandom(12 * MIB)  # above the 8 MiB default threshold: multipart
    await s3.upload_fileobj(io.BytesIO(body), BUCKET, "managed.bin")
    assert stub.objects[(BUCKET, "managed.bin")].body == body
    assert stub.stats.by_op["CompleteMultipartUpload"] == 1
    out = io.BytesIO()
    await s3.download_fileobj(BUCKET, "managed.bin", out)
    assert out.getvalue() == body


async def test_multipart_errors(stub: S3Stub, s3: Any) -> None:
    upload_id = (await s3.create_multipart_upload(Bucket=BUCKET, Key="mp"))["UploadId"]
    small = await s3.upload_part(
        Bucket=BUCKET, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"tiny"
    )
    last = await s3.upload_part(
        Bucket=BUCKET, Key="mp", UploadId=upload_id, PartNumber=2, Body=b"end"
    )
    parts = [
        {"PartNumber": 1, "ETag": small["ETag"]},
        {"PartNumber": 2, "ETag": last["ETag"]},
    ]
    with pytest.raises(ClientError) as too_small:
        await s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    assert error_code(too_small.value) == "EntityTooSmall"

    wrong_etag = [{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]
    with pytest.raises(ClientError) as invalid_part:
        await s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": wrong_etag}
        )
    assert error_code(invalid_part.value) == "InvalidPart"

    with pytest.raises(ClientError) as order:
        await s3.complete_multipart_upload(
            Bucket=BUCKET, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts[::-1]}
        )
    assert error_code(order.value) == "InvalidPartOrder"

    stub.min_part_size = 0
    done = await s3.complete_multipart_upload(
        Bucket=BUCKET, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    assert done["ETag"].endswith('-2"')
    assert stub.objects[(BUCKET, "mp")].body == b"tinyend"

    aborted = (await s3.create_multipart_upload(Bucket=BUCKET, Key="gone"))["UploadId"]
    await s3.abort_multipart_upload(Bucket=BUCKET, Key="gone", UploadId=aborted)
    with pytest.raises(ClientError) as no_upload:
        await s3.upload_part(Bucket=BUCKET, Key="gone", UploadId=aborted, PartNumber=1, Body=b"x")
    assert error_code(no_upload.value) == "NoSuchUpload"
    assert http_status(no_upload.value) == 404
    assert (BUCKET, "gone") not in stub.objects


# ---------------------------------------------------------------- latency and in-flight


async def test_latency_is_spent_in_flight(stub: S3Stub, s3: Any) -> None:
    stub.latency_s = 0.2
    started = time.monotonic()
    await asyncio.gather(
        *(s3.put_object(Bucket=BUCKET, Key=f"c/{i}", Body=b"x" * 1000) for i in range(20))
    )
    elapsed = time.monotonic() - started
    assert stub.stats.max_in_flight == 20
    assert stub.stats.in_flight == 0
    assert stub.stats.by_op["PutObject"] == 20
    # all 20 were in flight at once (above); the wall time only has to beat one after the
    # other (4 s): no tighter bound, a busy machine stretches it (1.8 s seen at load 17)
    assert 0.2 <= elapsed < 20 * 0.2, elapsed


async def test_max_in_flight_measures_a_client_cap(stub: S3Stub, s3: Any) -> None:
    stub.latency_s = 0.05
    cap = asyncio.Semaphore(5)

    async def put(i: int) -> None:
        async with cap:
            await s3.put_object(Bucket=BUCKET, Key=f"capped/{i}", Body=b"x")

    await asyncio.gather(*(put(i) for i in range(30)))
    assert stub.stats.max_in_flight == 5
    assert stub.stats.requests == 30

    stub.reset_stats()
    assert stub.stats.max_in_flight == 0
    assert stub.stats.requests == 0
    assert not stub.stats.by_op


# ---------------------------------------------------------------- faults


async def test_fail_next_slowdown_then_success(stub: S3Stub, s3: Any) -> None:
    stub.fail_next(2, 503, "SlowDown")
    for _ in range(2):
        with pytest.raises(ClientError) as slow:
            await s3.put_object(Bucket=BUCKET, Key="retry-me", Body=b"v")
        assert error_code(slow.value) == "SlowDown"
        assert http_status(slow.value) == 503
    await s3.put_object(Bucket=BUCKET, Key="retry-me", Body=b"v")
    assert stub.objects[(BUCKET, "retry-me")].body == b"v"
    assert stub.stats.faults_injected == 2
    assert stub.stats.errors == 2
    assert stub.faults == []


async def test_retrying_client_rides_out_a_fault(stub: S3Stub) -> None:
    # botocore's legacy ``max_attempts`` counts retries: 1 means two attempts.
    kwargs = client_kwargs(stub.endpoint, retries={"max_attempts": 1})
    async with aioboto3.Session().client("s3", **kwargs) as client:
        await client.create_bucket(Bucket=BUCKET)
        stub.fail_next(1, 500, "InternalError")
        await client.put_object(Bucket=BUCKET, Key="k", Body=b"v")
    assert stub.stats.by_op["PutObject"] == 2
    assert stub.stats.faults_injected == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (403, "AccessDenied"), (404, "NoSuchBucket")],
)
async def test_fail_all_until_cleared(stub: S3Stub, s3: Any, status: int, code: str) -> None:
    stub.fail_all(status, code)
    for _ in range(3):
        with pytest.raises(ClientError) as failed:
            await s3.get_object(Bucket=BUCKET, Key="whatever")
        assert error_code(failed.value) == code
        assert http_status(failed.value) == status
    stub.clear_faults()
    await s3.put_object(Bucket=BUCKET, Key="whatever", Body=b"ok")
    assert stub.stats.faults_injected == 3


async def test_faults_can_target_operations(stub: S3Stub, s3: Any) -> None:
    await s3.put_object(Bucket=BUCKET, Key="readable", Body=b"r")
    stub.fail_all(403, "AccessDenied", ops={"PutObject", "UploadPart"})
    stub_reads = await s3.get_object(Bucket=BUCKET, Key="readable")
    async with stub_reads["Body"] as stream:
        assert await stream.read() == b"r"
    with pytest.raises(ClientError) as denied:
        await s3.put_object(Bucket=BUCKET, Key="blocked", Body=b"b")
    assert error_code(denied.value) == "AccessDenied"
    stub.clear_faults()

    # Faults queue in call order.
    stub.fail_next(1, 503, "SlowDown")
    stub.fail_next(1, 500, "InternalError")
    codes = []
    for _ in range(2):
        with pytest.raises(ClientError) as failed:
            await s3.head_bucket(Bucket=BUCKET)
        codes.append(http_status(failed.value))
    assert codes == [503, 500]


async def test_drop_closes_the_connection(stub: S3Stub, s3: Any) -> None:
    # aiohttp resends once on a fresh connection when a pooled one is closed under it,
    # so two drops are needed before an aioboto3 caller sees the failure.
    await s3.put_object(Bucket=BUCKET, Key="warm", Body=b"w")
    stub.drop_next(2)
    with pytest.raises(BotoCoreError):
        await s3.put_object(Bucket=BUCKET, Key="dropped", Body=b"d")
    assert stub.stats.faults_injected == 2
    assert (BUCKET, "dropped") not in stub.objects
    await s3.put_object(Bucket=BUCKET, Key="dropped", Body=b"d")

    def sync_drop() -> None:
        with sync_client(stub.endpoint) as client:
            stub.drop_next(1)  # plain attribute update; the next request reads it
            with pytest.raises(ConnectionClosedError):
                client.put_object(Bucket=BUCKET, Key="sync-dropped", Body=b"d")
            client.put_object(Bucket=BUCKET, Key="sync-dropped", Body=b"d")

    await asyncio.to_thread(sync_drop)
    assert stub.stats.faults_injected == 3
    assert stub.stats.in_flight == 0


async def test_stop_refuses_connections_and_restart_keeps_data(stub: S3Stub, s3: Any) -> None:
    await s3.put_object(Bucket=BUCKET, Key="kept", Body=b"data")
    endpoint = stub.endpoint
    await stub.stop()
    assert not stub.running
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{endpoint}/{BUCKET}/kept"):
                pass
    with pytest.raises(BotoCoreError):
        await s3.get_object(Bucket=BUCKET, Key="kept")

    assert await stub.start() == endpoint
    got = await s3.get_object(Bucket=BUCKET, Key="kept")
    async with got["Body"] as stream:
        assert await stream.read() == b"data"


async def test_stop_with_slow_requests_in_flight(stub: S3Stub, s3: Any) -> None:
    stub.latency_s = 2.0
    pending = asyncio.ensure_future(s3.put_object(Bucket=BUCKET, Key="slow", Body=b"s"))
    for _ in range(1000):  # up to 10 s on a busy machine
        if stub.stats.in_flight:
            break
        await asyncio.sleep(0.01)
    assert stub.stats.in_flight == 1
    started = time.monotonic()
    await stub.stop()
    assert time.monotonic() - started < 2.0  # did not wait out the 2 s request
    with pytest.raises(BotoCoreError):
        await pending
    assert stub.stats.in_flight == 0


# ---------------------------------------------------------------- boto3 (sync)


async def test_boto3_sync_client_in_thread(stub: S3Stub) -> None:
    stub.latency_s = 0.01
    body = os.urandom(2 * MIB)  # over 1 MiB: botocore sends Expect: 100-continue

    def work() -> tuple[bytes, str, dict[str, str]]:
        with sync_client(stub.endpoint) as client:
            client.create_bucket(Bucket=BUCKET)
            put = client.put_object(
                Bucket=BUCKET, Key="sync.bin", Body=body, ContentType="application/x-test"
            )
            got = client.get_object(Bucket=BUCKET, Key="sync.bin")
            client.upload_fileobj(io.BytesIO(body * 5), BUCKET, "sync-multipart.bin")
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "sync.bin"}]})
            return got["Body"].read(), put["ETag"], got["Metadata"]

    data, etag, metadata = await asyncio.to_thread(work)
    assert data == body
    assert etag == f'"{hashlib.md5(body).hexdigest()}"'
    assert metadata == {}
    assert (BUCKET, "sync.bin") not in stub.objects
    assert stub.objects[(BUCKET, "sync-multipart.bin")].body == body * 5
    assert stub.stats.by_op["DeleteObjects"] == 1
    assert stub.stats.in_flight == 0


# ---------------------------------------------------------------- control API


async def test_control_api(stub: S3Stub, s3: Any) -> None:
    base = f"{stub.endpoint}/_stub"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/latency", params={"ms": "30"}) as resp:
            assert resp.status == 200
        assert stub.latency_s == pytest.approx(0.03)

        started = time.monotonic()
        await s3.put_object(Bucket=BUCKET, Key="ctl", Body=b"12345", ContentType="text/plain")
        assert time.monotonic() - started >= 0.03

        params = {"n": "1", "status": "500", "code": "InternalError"}
        async with http.post(f"{base}/fail", params=params) as resp:
            assert resp.status == 200
            assert (await resp.json())["faults"][0]["remaining"] == 1
        with pytest.raises(ClientError) as failed:
            await s3.get_object(Bucket=BUCKET, Key="ctl")
        assert error_code(failed.value) == "InternalError"

        async with http.get(f"{base}/stats") as resp:
            stats = await resp.json()
        assert stats["requests"] == 2
        assert stats["by_op"] == {"PutObject": 1, "GetObject": 1}
        assert stats["max_in_flight"] == 1
        assert stats["in_flight"] == 0
        assert stats["bytes_in"] == 5
        assert stats["faults_injected"] == 1
        assert stats["latency_ms"] == pytest.approx(30.0)
        assert stats["buckets"] == [BUCKET]

        async with http.post(f"{base}/fail", params={"status": "403", "code": "AccessDenied"}):
            pass
        with pytest.raises(ClientError):
            await s3.head_bucket(Bucket=BUCKET)
        async with http.post(f"{base}/clear") as resp:
            assert resp.status == 200
        await s3.head_bucket(Bucket=BUCKET)

        async with http.post(f"{base}/drop", params={"n": "1"}):
            pass
        assert stub.faults == [
            {"action": "drop", "status": 0, "code": "", "remaining": 1, "ops": None}
        ]
        async with http.post(f"{base}/clear"):
            pass

        async with http.get(f"{base}/objects") as resp:
            objects = await resp.json()
        assert objects == [
            {
                "bucket": BUCKET,
                "key": "ctl",
                "size": 5,
                "etag": f'"{hashlib.md5(b"12345").hexdigest()}"',
                "content_type": "text/plain",
                "metadata": {},
            }
        ]

        async with http.post(f"{base}/reset") as resp:
            assert resp.status == 200
        assert stub.stats.requests == 0
        assert stub.objects
        async with http.post(f"{base}/reset", params={"store": "1"}):
            pass
        assert not stub.objects
        assert not stub.buckets

        async with http.post(f"{base}/latency", params={"ms": "oops"}) as resp:
            assert resp.status == 400
        async with http.get(f"{base}/nope") as resp:
            assert resp.status == 404
    # Control requests are not S3 requests.
    assert stub.stats.requests == 0


async def test_cli_runs_a_separate_process() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline.testing.s3stub",
        "--port",
        "0",
        "--latency-ms",
        "20",
        "--bucket",
        BUCKET,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        # a new interpreter importing aiohttp: seconds on a busy 2-core box, so a wide bound
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=120)).decode().strip()
        assert line.startswith("ready http://127.0.0.1:")
        endpoint = line.split(" ", 1)[1]

        def put() -> None:
            with sync_client(endpoint) as client:
                client.put_object(Bucket=BUCKET, Key="from-cli", Body=b"hello")

        await asyncio.to_thread(put)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{endpoint}/_stub/stats") as resp:
                stats = await resp.json()
            assert stats["by_op"] == {"PutObject": 1}
            assert stats["latency_ms"] == pytest.approx(20.0)
            async with http.get(f"{endpoint}/_stub/objects") as resp:
                assert [o["key"] for o in await resp.json()] == ["from-cli"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
