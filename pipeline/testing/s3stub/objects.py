"""The object-level S3 operations: put, get/head (with a single ``Range``), delete, and the
multipart upload (create, upload part, complete, abort). Each takes the store and the request
and returns the answer (or raises :class:`~pipeline.testing.s3stub.protocol.S3Error`)."""

from __future__ import annotations

import hashlib
import uuid
from urllib.parse import quote

from aiohttp import web

from pipeline.testing.s3stub.protocol import (
    MAX_PART_NUMBER,
    RequestCtx,
    S3Error,
    child_text,
    el,
    http_date,
    local_name,
    object_attrs,
    parse_range,
    parse_xml,
    payload,
    quoted_md5,
    xml_response,
)
from pipeline.testing.s3stub.store import Store, StoredObject, Upload


def put_object(store: Store, ctx: RequestCtx) -> web.Response:
    store.require_bucket(ctx.bucket)
    body = payload(ctx)
    content_type, metadata, stored = object_attrs(ctx)
    etag = quoted_md5(body)
    store.objects[(ctx.bucket, ctx.key)] = StoredObject(
        body=body, content_type=content_type, metadata=metadata, etag=etag, headers=stored
    )
    return web.Response(headers={"ETag": etag})


def get_object(store: Store, ctx: RequestCtx) -> web.Response:
    store.require_bucket(ctx.bucket)
    obj = store.objects.get((ctx.bucket, ctx.key))
    if obj is None:
        raise S3Error(404, "NoSuchKey", Key=ctx.key)
    headers: dict[str, str] = {
        "Content-Type": obj.content_type,
        "ETag": obj.etag,
        "Last-Modified": http_date(obj.last_modified),
        "Accept-Ranges": "bytes",
        **obj.headers,
    }
    for name, value in obj.metadata.items():
        headers[f"x-amz-meta-{name}"] = value
    for name, value in ctx.query.items():
        if name.startswith("response-"):
            header = "-".join(part.capitalize() for part in name[9:].split("-"))
            headers[header] = value
    status = 200
    body = obj.body
    range_header = ctx.request.headers.get("Range")
    if range_header is not None:
        span = parse_range(range_header, obj.size)
        if span is not None:
            start, end = span
            body = obj.body[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{obj.size}"
    headers["Content-Length"] = str(len(body))  # the server counts it as bytes served
    return web.Response(status=status, body=body, headers=headers)


def delete_object(store: Store, ctx: RequestCtx) -> web.Response:
    store.require_bucket(ctx.bucket)
    store.objects.pop((ctx.bucket, ctx.key), None)
    return web.Response(status=204)


def get_upload(store: Store, ctx: RequestCtx) -> tuple[str, Upload]:
    store.require_bucket(ctx.bucket)
    upload_id = ctx.query["uploadId"]
    upload = store.uploads.get(upload_id)
    if upload is None or (upload.bucket, upload.key) != (ctx.bucket, ctx.key):
        raise S3Error(404, "NoSuchUpload", UploadId=upload_id)
    return upload_id, upload


def create_multipart_upload(store: Store, ctx: RequestCtx) -> web.Response:
    store.require_bucket(ctx.bucket)
    content_type, metadata, stored = object_attrs(ctx)
    upload_id = uuid.uuid4().hex
    store.uploads[upload_id] = Upload(ctx.bucket, ctx.key, content_type, metadata, stored)
    inner = el("Bucket", ctx.bucket) + el("Key", ctx.key) + el("UploadId", upload_id)
    return xml_response("InitiateMultipartUploadResult", inner)


def upload_part(store: Store, ctx: RequestCtx) -> web.Response:
    _, upload = get_upload(store, ctx)
    try:
        part_number = int(ctx.query["partNumber"])
    except ValueError:
        part_number = 0
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise S3Error(400, "InvalidArgument", "Part number must be an integer between 1 and 10000")
    body = payload(ctx)
    etag = quoted_md5(body)
    upload.parts[part_number] = (body, etag)
    return web.Response(headers={"ETag": etag})


def complete_multipart_upload(store: Store, ctx: RequestCtx) -> web.Response:
    upload_id, upload = get_upload(store, ctx)
    root = parse_xml(ctx.body)
    requested: list[tuple[int, str]] = []
    for child in root:
        if local_name(child.tag) != "Part":
            continue
        number_text = child_text(child, "PartNumber")
        etag_text = child_text(child, "ETag")
        if number_text is None or etag_text is None:
            raise S3Error(400, "MalformedXML")
        try:
            requested.append((int(number_text), etag_text.strip().strip('"')))
        except ValueError as exc:
            raise S3Error(400, "MalformedXML") from exc
    if not requested:
        raise S3Error(400, "MalformedXML")
    numbers = [number for number, _ in requested]
    if numbers != sorted(set(numbers)):
        raise S3Error(400, "InvalidPartOrder", UploadId=upload_id)
    bodies: list[bytes] = []
    digests = bytearray()
    for index, (number, etag) in enumerate(requested):
        part = upload.parts.get(number)
        if part is None or part[1].strip('"') != etag:
            raise S3Error(400, "InvalidPart", UploadId=upload_id, PartNumber=str(number))
        if index < len(requested) - 1 and len(part[0]) < store.min_part_size:
            raise S3Error(
                400,
                "EntityTooSmall",
                ProposedSize=str(len(part[0])),
                MinSizeAllowed=str(store.min_part_size),
                PartNumber=str(number),
            )
        bodies.append(part[0])
        digests += bytes.fromhex(etag)
    etag = f'"{hashlib.md5(digests).hexdigest()}-{len(requested)}"'
    store.objects[(ctx.bucket, ctx.key)] = StoredObject(
        body=b"".join(bodies),
        content_type=upload.content_type,
        metadata=upload.metadata,
        etag=etag,
        headers=upload.headers,
    )
    del store.uploads[upload_id]
    location = f"{ctx.endpoint}/{ctx.bucket}/{quote(ctx.key, safe='/~')}"
    inner = (
        el("Location", location) + el("Bucket", ctx.bucket) + el("Key", ctx.key) + el("ETag", etag)
    )
    return xml_response("CompleteMultipartUploadResult", inner)


def abort_multipart_upload(store: Store, ctx: RequestCtx) -> web.Response:
    upload_id, _ = get_upload(store, ctx)
    del store.uploads[upload_id]
    return web.Response(status=204)
