"""The bucket-level S3 operations: list, create, head, delete, location, list objects (v1 and
v2) and multi-object delete. Each takes the store and the request and returns the answer (or
raises :class:`~pipeline.testing.s3stub.protocol.S3Error`)."""

from __future__ import annotations

import base64
import binascii
import time
from urllib.parse import quote

from aiohttp import web

from pipeline.testing.s3stub.protocol import (
    BUCKET_NAME_RE,
    OWNER_XML,
    RequestCtx,
    S3Error,
    child_text,
    el,
    iso_date,
    local_name,
    parse_xml,
    verify_checksums,
    xml_response,
)
from pipeline.testing.s3stub.store import Store, StoredObject


def list_buckets(store: Store, ctx: RequestCtx) -> web.Response:
    entries = "".join(
        "<Bucket>" + el("Name", name) + el("CreationDate", iso_date(created)) + "</Bucket>"
        for name, created in sorted(store.buckets.items())
    )
    return xml_response("ListAllMyBucketsResult", f"{OWNER_XML}<Buckets>{entries}</Buckets>")


def create_bucket(store: Store, ctx: RequestCtx) -> web.Response:
    if not BUCKET_NAME_RE.match(ctx.bucket) or ".." in ctx.bucket:
        raise S3Error(400, "InvalidBucketName", BucketName=ctx.bucket)
    if ctx.bucket in store.buckets:
        raise S3Error(409, "BucketAlreadyOwnedByYou", BucketName=ctx.bucket)
    store.buckets[ctx.bucket] = time.time()
    return web.Response(headers={"Location": f"/{ctx.bucket}"})


def head_bucket(store: Store, ctx: RequestCtx) -> web.Response:
    store.require_bucket(ctx.bucket)
    return web.Response(headers={"x-amz-bucket-region": "us-east-1"})


def delete_bucket(store: Store, ctx: RequestCtx) -> web.Response:
    store.require_bucket(ctx.bucket)
    if any(bucket == ctx.bucket for bucket, _ in store.objects):
        raise S3Error(409, "BucketNotEmpty", BucketName=ctx.bucket)
    del store.buckets[ctx.bucket]
    for upload_id in [u for u, up in store.uploads.items() if up.bucket == ctx.bucket]:
        del store.uploads[upload_id]
    return web.Response(status=204)


def get_bucket_location(store: Store, ctx: RequestCtx) -> web.Response:
    store.require_bucket(ctx.bucket)
    return xml_response("LocationConstraint", "")


def list_objects(store: Store, ctx: RequestCtx) -> web.Response:
    store.require_bucket(ctx.bucket)
    q = ctx.query
    v2 = q.get("list-type") == "2"
    prefix = q.get("prefix", "")
    delimiter = q.get("delimiter", "")
    try:
        max_keys = min(max(int(q.get("max-keys", "1000")), 0), 1000)
    except ValueError as exc:
        raise S3Error(400, "InvalidArgument", "max-keys must be an integer") from exc
    url_encode = q.get("encoding-type") == "url"
    if "encoding-type" in q and not url_encode:
        raise S3Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request")

    after = ""
    after_is_prefix = False
    token = q.get("continuation-token")
    if v2 and token is not None:
        try:
            decoded = base64.urlsafe_b64decode(token.encode()).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise S3Error(400, "InvalidArgument", "The continuation token is invalid") from exc
        if decoded[:1] not in ("K", "P"):
            raise S3Error(400, "InvalidArgument", "The continuation token is invalid")
        after, after_is_prefix = decoded[1:], decoded[0] == "P"
    else:
        after = q.get("start-after" if v2 else "marker", "")
        after_is_prefix = bool(delimiter) and after.endswith(delimiter)

    contents: list[tuple[str, StoredObject]] = []
    prefixes: list[str] = []
    truncated = False
    last = ""
    last_is_prefix = False
    keys = sorted(key for bucket, key in store.objects if bucket == ctx.bucket)
    for key in keys:
        if not key.startswith(prefix) or key <= after:
            continue
        if after_is_prefix and key.startswith(after):
            continue
        common: str | None = None
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                common = key[: cut + len(delimiter)]
        if common is not None and prefixes and prefixes[-1] == common:
            continue
        if len(contents) + len(prefixes) >= max_keys:
            truncated = max_keys > 0
            break
        if common is not None:
            prefixes.append(common)
            last, last_is_prefix = common, True
        else:
            contents.append((key, store.objects[(ctx.bucket, key)]))
            last, last_is_prefix = key, False

    def enc(value: str) -> str:
        return quote(value, safe="/~") if url_encode else value

    inner = el("Name", ctx.bucket) + el("Prefix", enc(prefix))
    if delimiter:
        inner += el("Delimiter", enc(delimiter))
    inner += el("MaxKeys", max_keys)
    if url_encode:
        inner += el("EncodingType", "url")
    if v2:
        inner += el("KeyCount", len(contents) + len(prefixes))
        if token is not None:
            inner += el("ContinuationToken", token)
        if "start-after" in q:
            inner += el("StartAfter", enc(q["start-after"]))
        if truncated:
            marker = ("P" if last_is_prefix else "K") + last
            inner += el("NextContinuationToken", base64.urlsafe_b64encode(marker.encode()).decode())
    else:
        inner += el("Marker", enc(q.get("marker", "")))
        if truncated:
            inner += el("NextMarker", enc(last))
    inner += el("IsTruncated", truncated)
    owner = OWNER_XML if (not v2 or q.get("fetch-owner") == "true") else ""
    for key, obj in contents:
        inner += (
            "<Contents>"
            + el("Key", enc(key))
            + el("LastModified", iso_date(obj.last_modified))
            + el("ETag", obj.etag)
            + el("Size", obj.size)
            + owner
            + el("StorageClass", "STANDARD")
            + "</Contents>"
        )
    for common in prefixes:
        inner += "<CommonPrefixes>" + el("Prefix", enc(common)) + "</CommonPrefixes>"
    return xml_response("ListBucketResult", inner)


def delete_objects(store: Store, ctx: RequestCtx) -> web.Response:
    store.require_bucket(ctx.bucket)
    verify_checksums(ctx.request, ctx.body, {})
    root = parse_xml(ctx.body)
    quiet = (child_text(root, "Quiet") or "").strip().lower() == "true"
    inner = ""
    for child in root:
        if local_name(child.tag) != "Object":
            continue
        key = child_text(child, "Key")
        if key is None:
            raise S3Error(400, "MalformedXML")
        store.objects.pop((ctx.bucket, key), None)
        if not quiet:
            inner += "<Deleted>" + el("Key", key) + "</Deleted>"
    return xml_response("DeleteResult", inner)
