"""In-memory S3-compatible HTTP stub for tests and benchmarks.

What it is for:

* a fixed per-request latency (``latency_s``, changeable at run time), so benchmarks
  can model a remote object store (e.g. 50 ms, or 2 s for a "slow S3" test);
* instrumentation: requests in flight, the maximum seen, totals per operation and
  bytes received/served (``stats``), so a test can prove a client's concurrency cap;
* fault injection: the next N requests (or all of them until cleared) answer with a
  given HTTP status and S3 error code, or have their connection closed with no
  response; ``stop()`` stops listening (connections are refused afterwards) and a
  later ``start()`` listens again on the same port with the stored data intact.

Only path-style addressing is served (``http://127.0.0.1:PORT/bucket/key``).  Signatures
are not checked (any credentials work, presigned-URL query parameters are ignored).
Supported operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket,
GetBucketLocation, ListObjects (v1), ListObjectsV2, PutObject, GetObject (with a
single ``Range``), HeadObject, DeleteObject, DeleteObjects, CreateMultipartUpload,
UploadPart, CompleteMultipartUpload and AbortMultipartUpload.  Anything else answers
501 NotImplemented.  ``Content-MD5`` and ``x-amz-checksum-{crc32,sha1,sha256}`` are
verified when sent; ``aws-chunked`` bodies are decoded.

Latency, faults and the in-flight count apply to S3 requests only, never to the control
API that is served on the same port under ``/_stub/`` (for a stub in another process):

* ``GET  /_stub/stats``                       -> JSON stats (plus latency and fault state)
* ``GET  /_stub/objects``                     -> JSON list of stored objects (no bodies)
* ``POST /_stub/reset[?store=1]``             -> reset stats (``store=1``: also drop all data)
* ``POST /_stub/latency?ms=50``               -> set the latency
* ``POST /_stub/fail?n=2&status=503&code=SlowDown[&ops=PutObject,UploadPart]``
  (``n`` omitted or ``all``: every request until cleared)
* ``POST /_stub/drop?n=1[&ops=...]``          -> close the connection without a response
* ``POST /_stub/clear``                       -> clear all faults

Run as a process: ``python -m bench.s3_stub --port 9000 --latency-ms 50`` prints
``ready http://127.0.0.1:9000`` on stdout once it listens, and stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import re
import signal
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qsl, quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from aiohttp import web

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "S3Error",
    "S3Stub",
    "StoredObject",
    "StubStats",
    "decode_aws_chunked",
    "main",
]

S3_XMLNS: Final = "http://s3.amazonaws.com/doc/2006-03-01/"
DEFAULT_CONTENT_TYPE: Final = "binary/octet-stream"
MIN_PART_SIZE: Final = 5 * 1024 * 1024
MAX_PART_NUMBER: Final = 10_000
CONTROL_PREFIX: Final = "/_stub"

#: Standard object headers that PutObject/CreateMultipartUpload store and GET/HEAD return.
_STORED_HEADERS: Final = (
    "Cache-Control",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Expires",
)
_LIST_PARAMS: Final = frozenset(
    {
        "list-type",
        "prefix",
        "delimiter",
        "max-keys",
        "marker",
        "encoding-type",
        "continuation-token",
        "start-after",
        "fetch-owner",
    }
)
_BUCKET_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RANGE_RE: Final = re.compile(r"^bytes=(\d*)-(\d*)$")
_HEX_RE: Final = re.compile(rb"^[0-9a-fA-F]+$")
_OWNER_XML: Final = "<Owner><ID>stub-owner</ID><DisplayName>stub</DisplayName></Owner>"

_DEFAULT_MESSAGES: Final[Mapping[str, str]] = {
    "AccessDenied": "Access Denied",
    "BadDigest": "The Content-MD5 or checksum you specified did not match what we received.",
    "BucketAlreadyOwnedByYou": "Your previous request to create the named bucket succeeded "
    "and you already own it.",
    "BucketNotEmpty": "The bucket you tried to delete is not empty",
    "EntityTooSmall": "Your proposed upload is smaller than the minimum allowed object size.",
    "IncompleteBody": "You did not provide the number of bytes specified by the "
    "Content-Length HTTP header.",
    "InternalError": "We encountered an internal error. Please try again.",
    "InvalidArgument": "Invalid Argument",
    "InvalidBucketName": "The specified bucket is not valid.",
    "InvalidDigest": "The Content-MD5 or checksum you specified is not valid.",
    "InvalidPart": "One or more of the specified parts could not be found.  The part may "
    "not have been uploaded, or the specified entity tag may not match the part's "
    "entity tag.",
    "InvalidPartOrder": "The list of parts was not in ascending order. Parts must be "
    "ordered by part number.",
    "InvalidRange": "The requested range is not satisfiable",
    "MalformedXML": "The XML you provided was not well-formed or did not validate against "
    "our published schema.",
    "NoSuchBucket": "The specified bucket does not exist",
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchUpload": "The specified upload does not exist. The upload ID may be invalid, or "
    "the upload may have been aborted or completed.",
    "NotImplemented": "A header or query you provided implies functionality that is not "
    "implemented.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "SlowDown": "Please reduce your request rate.",
}


class S3Error(Exception):
    """An S3 error answer: HTTP ``status`` plus an ``<Error>`` XML document."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str | None = None,
        **details: str,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message if message is not None else _DEFAULT_MESSAGES.get(code, code)
        self.details = details
        super().__init__(f"{status} {code}: {self.message}")


@dataclass(slots=True)
class StoredObject:
    """One stored object.  ``etag`` is quoted, exactly as sent in the ``ETag`` header."""

    body: bytes
    content_type: str
    metadata: dict[str, str]
    etag: str
    last_modified: float = field(default_factory=time.time)
    headers: dict[str, str] = field(default_factory=dict)
    """Stored standard headers (Cache-Control, Content-Disposition, Content-Encoding, ...)."""

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(slots=True)
class StubStats:
    """Counters for S3 requests (control-API requests are not counted)."""

    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0
    """Request body bytes received (raw, as sent on the wire)."""
    bytes_out: int = 0
    """Object bytes served by GetObject."""
    errors: int = 0
    """Answers with status >= 400, injected faults included."""
    faults_injected: int = 0
    """Injected error answers plus dropped connections."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "requests": self.requests,
            "by_op": dict(self.by_op),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "errors": self.errors,
            "faults_injected": self.faults_injected,
        }


@dataclass(slots=True)
class _Fault:
    status: int
    """0 means: close the connection without answering."""
    code: str
    remaining: int | None
    """None means: until cleared."""
    ops: frozenset[str] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "drop" if self.status == 0 else "error",
            "status": self.status,
            "code": self.code,
            "remaining": self.remaining,
            "ops": sorted(self.ops) if self.ops is not None else None,
        }


@dataclass(slots=True)
class _Upload:
    bucket: str
    key: str
    content_type: str
    metadata: dict[str, str]
    headers: dict[str, str]
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)


@dataclass(slots=True)
class _Ctx:
    request: web.Request
    bucket: str
    key: str
    query: dict[str, str]
    body: bytes


def decode_aws_chunked(data: bytes) -> tuple[bytes, dict[str, str]]:
    """Decode an ``aws-chunked`` body; returns the payload and the trailers (lower-case names).

    Raises ``ValueError`` on malformed input.
    """
    out = bytearray()
    pos = 0
    end = len(data)
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise ValueError("aws-chunked: truncated chunk header")
        size_field = data[pos:eol].split(b";", 1)[0].strip()
        if not _HEX_RE.match(size_field):
            raise ValueError(f"aws-chunked: bad chunk size {size_field!r}")
        size = int(size_field, 16)
        pos = eol + 2
        if size == 0:
            break
        if pos + size + 2 > end or data[pos + size : pos + size + 2] != b"\r\n":
            raise ValueError("aws-chunked: truncated chunk")
        out += data[pos : pos + size]
        pos += size + 2
    trailers: dict[str, str] = {}
    while pos < end:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            eol = end
        line = data[pos:eol]
        pos = eol + 2
        if not line:
            break
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError(f"aws-chunked: bad trailer {line!r}")
        trailers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return bytes(out), trailers


def _quoted_md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def _iso_date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _xml_response(
    root: str, inner: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    doc = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_XMLNS}">{inner}</{root}>'
    return web.Response(
        status=status, body=doc.encode(), content_type="application/xml", headers=headers
    )


def _el(tag: str, value: str | int | bool) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else escape(str(value))
    return f"<{tag}>{text}</{tag}>"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(body: bytes) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise S3Error(400, "MalformedXML") from exc


def _child_text(elem: ElementTree.Element, name: str) -> str | None:
    for child in elem:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def _parse_ops(ops: Iterable[str] | str | None) -> frozenset[str] | None:
    if ops is None:
        return None
    if isinstance(ops, str):
        ops = ops.split(",")
    parsed = frozenset(op.strip() for op in ops if op.strip())
    return parsed or None


def _error_response(exc: S3Error, request_id: str) -> web.Response:
    inner = _el("Code", exc.code) + _el("Message", exc.message)
    for name, value in exc.details.items():
        inner += _el(name, value)
    inner += _el("RequestId", request_id) + _el("HostId", "s3-stub")
    doc = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'
    return web.Response(status=exc.status, body=doc.encode(), content_type="application/xml")


def _classify(method: str, bucket: str, key: str, query: Mapping[str, str], has_copy: bool) -> str:
    """Map a request onto an S3 operation name (``Unsupported`` when not served)."""
    params = set(query)
    if not bucket:
        return "ListBuckets" if method == "GET" and not params else "Unsupported"
    if not key:
        if method == "GET":
            if params == {"location"}:
                return "GetBucketLocation"
            if not params <= _LIST_PARAMS:
                return "Unsupported"
            return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
        if method == "POST" and params == {"delete"}:
            return "DeleteObjects"
        if params:
            return "Unsupported"
        return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(
            method, "Unsupported"
        )
    if method == "PUT":
        if has_copy:
            return "Unsupported"
        if params == {"partNumber", "uploadId"}:
            return "UploadPart"
        return "PutObject" if not params else "Unsupported"
    if method in ("GET", "HEAD"):
        if all(p == "versionId" or p.startswith("response-") for p in params):
            return "GetObject" if method == "GET" else "HeadObject"
        return "Unsupported"
    if method == "DELETE":
        if params == {"uploadId"}:
            return "AbortMultipartUpload"
        return "DeleteObject" if params <= {"versionId"} else "Unsupported"
    if method == "POST":
        if params == {"uploads"}:
            return "CreateMultipartUpload"
        if params == {"uploadId"}:
            return "CompleteMultipartUpload"
    return "Unsupported"


def _is_ignored_param(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("x-amz-") or lowered in {
        "x-id",
        "awsaccesskeyid",
        "signature",
        "expires",
    }


class S3Stub:
    """In-memory S3 endpoint on ``http://{host}:{port}`` with latency, stats and faults.

    All state lives on the event loop that runs the stub; mutate it from that loop.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        min_part_size: int = MIN_PART_SIZE,
        shutdown_timeout_s: float = 0.5,
    ) -> None:
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self.min_part_size = min_part_size
        """Minimum size of every part but the last (S3: 5 MiB); 0 disables the check."""
        self.shutdown_timeout_s = shutdown_timeout_s
        """How long ``stop()`` lets in-flight requests finish before cancelling them."""
        self.stats = StubStats()
        self.buckets: dict[str, float] = {}
        """Bucket name -> creation time."""
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.uploads: dict[str, _Upload] = {}
        """Multipart uploads in progress, by upload id."""
        self._faults: list[_Fault] = []
        self._runner: web.AppRunner | None = None
        self._ops: dict[str, Callable[[_Ctx], web.Response]] = {
            "ListBuckets": self._list_buckets,
            "CreateBucket": self._create_bucket,
            "HeadBucket": self._head_bucket,
            "DeleteBucket": self._delete_bucket,
            "GetBucketLocation": self._get_bucket_location,
            "ListObjects": self._list_objects,
            "ListObjectsV2": self._list_objects,
            "PutObject": self._put_object,
            "GetObject": self._get_object,
            "HeadObject": self._get_object,
            "DeleteObject": self._delete_object,
            "DeleteObjects": self._delete_objects,
            "CreateMultipartUpload": self._create_multipart_upload,
            "UploadPart": self._upload_part,
            "CompleteMultipartUpload": self._complete_multipart_upload,
            "AbortMultipartUpload": self._abort_multipart_upload,
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def endpoint(self) -> str:
        """``http://host:port``; known once ``start()`` has bound the port."""
        if self.port == 0:
            raise RuntimeError("S3Stub has not been started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> str:
        """Start listening; returns the endpoint URL.  A restart reuses the previous port."""
        if self._runner is not None:
            raise RuntimeError("S3Stub is already running")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            auto_decompress=False,
            shutdown_timeout=self.shutdown_timeout_s,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        address = runner.addresses[0]
        self.port = int(address[1])
        self._runner = runner
        return self.endpoint

    async def stop(self) -> None:
        """Stop listening and close connections; stored data is kept."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ control

    def reset_stats(self) -> None:
        """Zero the counters; ``max_in_flight`` restarts from the current ``in_flight``."""
        stats = self.stats
        stats.max_in_flight = stats.in_flight
        stats.requests = 0
        stats.by_op.clear()
        stats.bytes_in = 0
        stats.bytes_out = 0
        stats.errors = 0
        stats.faults_injected = 0

    def reset_store(self) -> None:
        """Drop all buckets, objects and multipart uploads."""
        self.buckets.clear()
        self.objects.clear()
        self.uploads.clear()

    def create_bucket(self, name: str) -> None:
        """Create a bucket directly (no request); existing buckets are left alone."""
        self.buckets.setdefault(name, time.time())

    def fail_next(
        self,
        n: int,
        status: int = 503,
        code: str = "SlowDown",
        *,
        ops: Iterable[str] | str | None = None,
    ) -> None:
        """Answer the next ``n`` S3 requests (of ``ops``, if given) with ``status``/``code``.

        Faults queue up in call order: ``fail_next(2); fail_next(1, 500, "InternalError")``
        gives 503, 503, 500.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        self._faults.append(_Fault(self._check_status(status), code, n, _parse_ops(ops)))

    def fail_all(self, status: int, code: str, *, ops: Iterable[str] | str | None = None) -> None:
        """Answer every S3 request (of ``ops``, if given) with ``status``/``code`` until
        ``clear_faults()``."""
        self._faults.append(_Fault(self._check_status(status), code, None, _parse_ops(ops)))

    def drop_next(self, n: int, *, ops: Iterable[str] | str | None = None) -> None:
        """Close the connection of the next ``n`` S3 requests without answering."""
        if n < 1:
            raise ValueError("n must be >= 1")
        self._faults.append(_Fault(0, "", n, _parse_ops(ops)))

    def drop_all(self, *, ops: Iterable[str] | str | None = None) -> None:
        """Close the connection of every S3 request without answering, until cleared."""
        self._faults.append(_Fault(0, "", None, _parse_ops(ops)))

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[dict[str, Any]]:
        """Pending faults, in the order they apply."""
        return [fault.to_dict() for fault in self._faults]

    @staticmethod
    def _check_status(status: int) -> int:
        if not 400 <= status <= 599:
            raise ValueError(f"fault status must be 4xx or 5xx, got {status}")
        return status

    def _take_fault(self, op: str) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.ops is not None and op not in fault.ops:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[index]
            return fault
        return None

    # ------------------------------------------------------------------ request path

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        if raw_path == CONTROL_PREFIX or raw_path.startswith(CONTROL_PREFIX + "/"):
            return await self._control(request, raw_path[len(CONTROL_PREFIX) :])

        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        request_id = uuid.uuid4().hex[:16].upper()
        try:
            try:
                resp = await self._serve_s3(request, raw_path, raw_query)
            except S3Error as exc:
                resp = _error_response(exc, request_id)
            if resp is None:  # connection dropped on purpose
                return web.Response(status=500)  # never sent: the transport is closed
            if resp.status >= 400:
                stats.errors += 1
            resp.headers["x-amz-request-id"] = request_id
            resp.headers["x-amz-id-2"] = "s3-stub"
            # Send the answer while the request still counts as in flight.
            with contextlib.suppress(ConnectionError):
                await resp.prepare(request)
                await resp.write_eof()
            return resp
        finally:
            stats.in_flight -= 1

    async def _serve_s3(
        self, request: web.Request, raw_path: str, raw_query: str
    ) -> web.Response | None:
        stats = self.stats
        bucket, _, key = unquote(raw_path).lstrip("/").partition("/")
        query = {
            name: value
            for name, value in parse_qsl(raw_query, keep_blank_values=True)
            if not _is_ignored_param(name)
        }
        op = _classify(request.method, bucket, key, query, "x-amz-copy-source" in request.headers)
        stats.by_op[op] += 1

        chunks = bytearray()
        async for chunk in request.content.iter_any():
            stats.bytes_in += len(chunk)
            chunks += chunk
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

        fault = self._take_fault(op)
        if fault is not None:
            stats.faults_injected += 1
            if fault.status == 0:
                request.protocol.force_close()
                return None
            raise S3Error(fault.status, fault.code)
        handler = self._ops.get(op)
        if handler is None:
            raise S3Error(501, "NotImplemented")
        return handler(_Ctx(request, bucket, key, query, bytes(chunks)))

    def _require_bucket(self, bucket: str) -> None:
        if bucket not in self.buckets:
            raise S3Error(404, "NoSuchBucket", BucketName=bucket)

    # ------------------------------------------------------------------ buckets

    def _list_buckets(self, ctx: _Ctx) -> web.Response:
        entries = "".join(
            "<Bucket>" + _el("Name", name) + _el("CreationDate", _iso_date(created)) + "</Bucket>"
            for name, created in sorted(self.buckets.items())
        )
        return _xml_response("ListAllMyBucketsResult", f"{_OWNER_XML}<Buckets>{entries}</Buckets>")

    def _create_bucket(self, ctx: _Ctx) -> web.Response:
        if not _BUCKET_NAME_RE.match(ctx.bucket) or ".." in ctx.bucket:
            raise S3Error(400, "InvalidBucketName", BucketName=ctx.bucket)
        if ctx.bucket in self.buckets:
            raise S3Error(409, "BucketAlreadyOwnedByYou", BucketName=ctx.bucket)
        self.buckets[ctx.bucket] = time.time()
        return web.Response(headers={"Location": f"/{ctx.bucket}"})

    def _head_bucket(self, ctx: _Ctx) -> web.Response:
        self._require_bucket(ctx.bucket)
        return web.Response(headers={"x-amz-bucket-region": "us-east-1"})

    def _delete_bucket(self, ctx: _Ctx) -> web.Response:
        self._require_bucket(ctx.bucket)
        if any(bucket == ctx.bucket for bucket, _ in self.objects):
            raise S3Error(409, "BucketNotEmpty", BucketName=ctx.bucket)
        del self.buckets[ctx.bucket]
        for upload_id in [u for u, up in self.uploads.items() if up.bucket == ctx.bucket]:
            del self.uploads[upload_id]
        return web.Response(status=204)

    def _get_bucket_location(self, ctx: _Ctx) -> web.Response:
        self._require_bucket(ctx.bucket)
        return _xml_response("LocationConstraint", "")

    def _list_objects(self, ctx: _Ctx) -> web.Response:
        self._require_bucket(ctx.bucket)
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
        keys = sorted(key for bucket, key in self.objects if bucket == ctx.bucket)
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
                contents.append((key, self.objects[(ctx.bucket, key)]))
                last, last_is_prefix = key, False

        def enc(value: str) -> str:
            return quote(value, safe="/~") if url_encode else value

        inner = _el("Name", ctx.bucket) + _el("Prefix", enc(prefix))
        if delimiter:
            inner += _el("Delimiter", enc(delimiter))
        inner += _el("MaxKeys", max_keys)
        if url_encode:
            inner += _el("EncodingType", "url")
        if v2:
            inner += _el("KeyCount", len(contents) + len(prefixes))
            if token is not None:
                inner += _el("ContinuationToken", token)
            if "start-after" in q:
                inner += _el("StartAfter", enc(q["start-after"]))
            if truncated:
                marker = ("P" if last_is_prefix else "K") + last
                inner += _el(
                    "NextContinuationToken", base64.urlsafe_b64encode(marker.encode()).decode()
                )
        else:
            inner += _el("Marker", enc(q.get("marker", "")))
            if truncated:
                inner += _el("NextMarker", enc(last))
        inner += _el("IsTruncated", truncated)
        owner = _OWNER_XML if (not v2 or q.get("fetch-owner") == "true") else ""
        for key, obj in contents:
            inner += (
                "<Contents>"
                + _el("Key", enc(key))
                + _el("LastModified", _iso_date(obj.last_modified))
                + _el("ETag", obj.etag)
                + _el("Size", obj.size)
                + owner
                + _el("StorageClass", "STANDARD")
                + "</Contents>"
            )
        for common in prefixes:
            inner += "<CommonPrefixes>" + _el("Prefix", enc(common)) + "</CommonPrefixes>"
        return _xml_response("ListBucketResult", inner)

    def _delete_objects(self, ctx: _Ctx) -> web.Response:
        self._require_bucket(ctx.bucket)
        self._verify_checksums(ctx.request, ctx.body, {})
        root = _parse_xml(ctx.body)
        quiet = (_child_text(root, "Quiet") or "").strip().lower() == "true"
        inner = ""
        for child in root:
            if _local(child.tag) != "Object":
                continue
            key = _child_text(child, "Key")
            if key is None:
                raise S3Error(400, "MalformedXML")
            self.objects.pop((ctx.bucket, key), None)
            if not quiet:
                inner += "<Deleted>" + _el("Key", key) + "</Deleted>"
        return _xml_response("DeleteResult", inner)

    # ------------------------------------------------------------------ objects

    @staticmethod
    def _object_attrs(ctx: _Ctx) -> tuple[str, dict[str, str], dict[str, str]]:
        headers = ctx.request.headers
        metadata = {
            name.lower()[len("x-amz-meta-") :]: value
            for name, value in headers.items()
            if name.lower().startswith("x-amz-meta-")
        }
        stored: dict[str, str] = {}
        for name in _STORED_HEADERS:
            value = headers.get(name)
            if name == "Content-Encoding" and value is not None:
                codings = [c.strip() for c in value.split(",")]
                value = ", ".join(c for c in codings if c and c.lower() != "aws-chunked")
            if value:
                stored[name] = value
        return headers.get("Content-Type", DEFAULT_CONTENT_TYPE), metadata, stored

    def _payload(self, ctx: _Ctx) -> bytes:
        """The request payload, aws-chunked decoded and verified against any digests."""
        headers = ctx.request.headers
        body = ctx.body
        trailers: dict[str, str] = {}
        encoding = headers.get("Content-Encoding", "").lower()
        streaming = headers.get("x-amz-content-sha256", "").upper().startswith("STREAMING-")
        if streaming or "aws-chunked" in encoding:
            try:
                body, trailers = decode_aws_chunked(body)
            except ValueError as exc:
                raise S3Error(400, "IncompleteBody", str(exc)) from exc
            declared = headers.get("x-amz-decoded-content-length")
            if declared is not None and declared.strip() != str(len(body)):
                raise S3Error(400, "IncompleteBody")
        self._verify_checksums(ctx.request, body, trailers)
        return body

    @staticmethod
    def _verify_checksums(request: web.Request, body: bytes, trailers: Mapping[str, str]) -> None:
        content_md5 = request.headers.get("Content-MD5")
        if content_md5 is not None:
            try:
                expected = base64.b64decode(content_md5.strip(), validate=True)
            except binascii.Error as exc:
                raise S3Error(400, "InvalidDigest", ContentMD5=content_md5) from exc
            if len(expected) != 16:
                raise S3Error(400, "InvalidDigest")
            if hashlib.md5(body).digest() != expected:
                raise S3Error(400, "BadDigest", ExpectedDigest=content_md5)
        digests: dict[str, Callable[[bytes], bytes]] = {
            "x-amz-checksum-crc32": lambda data: zlib.crc32(data).to_bytes(4, "big"),
            "x-amz-checksum-sha1": lambda data: hashlib.sha1(data).digest(),
            "x-amz-checksum-sha256": lambda data: hashlib.sha256(data).digest(),
        }
        for name, digest in digests.items():
            sent = request.headers.get(name, trailers.get(name))
            if sent is None:
                continue
            if base64.b64encode(digest(body)).decode() != sent.strip():
                algorithm = name.rsplit("-", 1)[-1].upper()
                raise S3Error(
                    400,
                    "BadDigest",
                    f"The {algorithm} you specified did not match the calculated checksum.",
                )

    def _put_object(self, ctx: _Ctx) -> web.Response:
        self._require_bucket(ctx.bucket)
        body = self._payload(ctx)
        content_type, metadata, stored = self._object_attrs(ctx)
        etag = _quoted_md5(body)
        self.objects[(ctx.bucket, ctx.key)] = StoredObject(
            body=body, content_type=content_type, metadata=metadata, etag=etag, headers=stored
        )
        return web.Response(headers={"ETag": etag})

    def _get_object(self, ctx: _Ctx) -> web.Response:
        self._require_bucket(ctx.bucket)
        obj = self.objects.get((ctx.bucket, ctx.key))
        if obj is None:
            raise S3Error(404, "NoSuchKey", Key=ctx.key)
        headers: dict[str, str] = {
            "Content-Type": obj.content_type,
            "ETag": obj.etag,
            "Last-Modified": _http_date(obj.last_modified),
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
            span = self._parse_range(range_header, obj.size)
            if span is not None:
                start, end = span
                body = obj.body[start : end + 1]
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{obj.size}"
        headers["Content-Length"] = str(len(body))
        if ctx.request.method == "GET":
            self.stats.bytes_out += len(body)
        return web.Response(status=status, body=body, headers=headers)

    @staticmethod
    def _parse_range(value: str, size: int) -> tuple[int, int] | None:
        """Inclusive byte span of a single ``bytes=`` range; None means "whole object"."""
        match = _RANGE_RE.match(value.strip())
        if match is None or (not match[1] and not match[2]):
            return None
        if match[1]:
            start = int(match[1])
            end = int(match[2]) if match[2] else size - 1
            if match[2] and end < start:
                return None
            if start >= size:
                raise S3Error(416, "InvalidRange", ActualObjectSize=str(size), RangeRequested=value)
            return start, min(end, size - 1)
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise S3Error(416, "InvalidRange", ActualObjectSize=str(size), RangeRequested=value)
        return max(size - suffix, 0), size - 1

    def _delete_object(self, ctx: _Ctx) -> web.Response:
        self._require_bucket(ctx.bucket)
        self.objects.pop((ctx.bucket, ctx.key), None)
        return web.Response(status=204)

    # ------------------------------------------------------------------ multipart

    def _get_upload(self, ctx: _Ctx) -> tuple[str, _Upload]:
        self._require_bucket(ctx.bucket)
        upload_id = ctx.query["uploadId"]
        upload = self.uploads.get(upload_id)
        if upload is None or (upload.bucket, upload.key) != (ctx.bucket, ctx.key):
            raise S3Error(404, "NoSuchUpload", UploadId=upload_id)
        return upload_id, upload

    def _create_multipart_upload(self, ctx: _Ctx) -> web.Response:
        self._require_bucket(ctx.bucket)
        content_type, metadata, stored = self._object_attrs(ctx)
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = _Upload(ctx.bucket, ctx.key, content_type, metadata, stored)
        inner = _el("Bucket", ctx.bucket) + _el("Key", ctx.key) + _el("UploadId", upload_id)
        return _xml_response("InitiateMultipartUploadResult", inner)

    def _upload_part(self, ctx: _Ctx) -> web.Response:
        _, upload = self._get_upload(ctx)
        try:
            part_number = int(ctx.query["partNumber"])
        except ValueError:
            part_number = 0
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise S3Error(
                400, "InvalidArgument", "Part number must be an integer between 1 and 10000"
            )
        body = self._payload(ctx)
        etag = _quoted_md5(body)
        upload.parts[part_number] = (body, etag)
        return web.Response(headers={"ETag": etag})

    def _complete_multipart_upload(self, ctx: _Ctx) -> web.Response:
        upload_id, upload = self._get_upload(ctx)
        root = _parse_xml(ctx.body)
        requested: list[tuple[int, str]] = []
        for child in root:
            if _local(child.tag) != "Part":
                continue
            number_text = _child_text(child, "PartNumber")
            etag_text = _child_text(child, "ETag")
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
            if index < len(requested) - 1 and len(part[0]) < self.min_part_size:
                raise S3Error(
                    400,
                    "EntityTooSmall",
                    ProposedSize=str(len(part[0])),
                    MinSizeAllowed=str(self.min_part_size),
                    PartNumber=str(number),
                )
            bodies.append(part[0])
            digests += bytes.fromhex(etag)
        etag = f'"{hashlib.md5(digests).hexdigest()}-{len(requested)}"'
        self.objects[(ctx.bucket, ctx.key)] = StoredObject(
            body=b"".join(bodies),
            content_type=upload.content_type,
            metadata=upload.metadata,
            etag=etag,
            headers=upload.headers,
        )
        del self.uploads[upload_id]
        location = f"{self.endpoint}/{ctx.bucket}/{quote(ctx.key, safe='/~')}"
        inner = (
            _el("Location", location)
            + _el("Bucket", ctx.bucket)
            + _el("Key", ctx.key)
            + _el("ETag", etag)
        )
        return _xml_response("CompleteMultipartUploadResult", inner)

    def _abort_multipart_upload(self, ctx: _Ctx) -> web.Response:
        upload_id, _ = self._get_upload(ctx)
        del self.uploads[upload_id]
        return web.Response(status=204)

    # ------------------------------------------------------------------ control API

    async def _control(self, request: web.Request, path: str) -> web.Response:
        query = request.rel_url.query
        route = (request.method, path.rstrip("/"))
        try:
            if route == ("GET", "/stats"):
                return web.json_response(
                    {
                        **self.stats.to_dict(),
                        "latency_ms": self.latency_s * 1000.0,
                        "faults": self.faults,
                        "buckets": sorted(self.buckets),
                        "objects": len(self.objects),
                        "uploads": len(self.uploads),
                    }
                )
            if route == ("GET", "/objects"):
                return web.json_response(
                    [
                        {
                            "bucket": bucket,
                            "key": key,
                            "size": obj.size,
                            "etag": obj.etag,
                            "content_type": obj.content_type,
                            "metadata": obj.metadata,
                        }
                        for (bucket, key), obj in sorted(self.objects.items())
                    ]
                )
            if route == ("POST", "/reset"):
                self.reset_stats()
                if query.get("store", "") in ("1", "true", "yes"):
                    self.reset_store()
                return web.json_response({"ok": True})
            if route == ("POST", "/latency"):
                ms = float(query["ms"])
                if not ms >= 0:
                    raise ValueError("ms must be >= 0")
                self.latency_s = ms / 1000.0
                return web.json_response({"ok": True, "latency_ms": ms})
            if route == ("POST", "/fail"):
                status = int(query.get("status", "503"))
                code = query.get("code", "SlowDown")
                n = query.get("n", "all")
                if n == "all":
                    self.fail_all(status, code, ops=query.get("ops"))
                else:
                    self.fail_next(int(n), status, code, ops=query.get("ops"))
                return web.json_response({"ok": True, "faults": self.faults})
            if route == ("POST", "/drop"):
                n = query.get("n", "1")
                if n == "all":
                    self.drop_all(ops=query.get("ops"))
                else:
                    self.drop_next(int(n), ops=query.get("ops"))
                return web.json_response({"ok": True, "faults": self.faults})
            if route == ("POST", "/clear"):
                self.clear_faults()
                return web.json_response({"ok": True})
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": f"bad parameters: {exc}"}, status=400)
        return web.json_response({"error": f"no control route {request.method} {path}"}, status=404)


# ---------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.s3_stub",
        description="In-memory S3 stub on 127.0.0.1 with latency, stats and fault injection.",
    )
    parser.add_argument("--port", type=int, default=9000, help="port (0: any free port)")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="added latency per S3 request"
    )
    parser.add_argument(
        "--bucket",
        action="append",
        default=[],
        metavar="NAME",
        help="create this bucket at start (repeatable)",
    )
    parser.add_argument(
        "--min-part-size",
        type=int,
        default=MIN_PART_SIZE,
        help="minimum size of non-last multipart parts (S3: 5 MiB; 0 disables the check)",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    stub = S3Stub(
        port=args.port, latency_s=args.latency_ms / 1000.0, min_part_size=args.min_part_size
    )
    for name in args.bucket:
        stub.create_bucket(name)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    endpoint = await stub.start()
    try:
        print(f"ready {endpoint}", flush=True)
        await stopping.wait()
    finally:
        await stub.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"s3_stub: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
