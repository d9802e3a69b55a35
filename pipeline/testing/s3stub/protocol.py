"""The S3 wire format the stub speaks: operation names, XML documents, error answers,
``aws-chunked`` bodies, digests and byte ranges. Nothing here holds state."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from aiohttp import web

S3_XMLNS: Final = "http://s3.amazonaws.com/doc/2006-03-01/"
DEFAULT_CONTENT_TYPE: Final = "binary/octet-stream"
MIN_PART_SIZE: Final = 5 * 1024 * 1024
MAX_PART_NUMBER: Final = 10_000
CONTROL_PREFIX: Final = "/_stub"

#: Standard object headers that PutObject/CreateMultipartUpload store and GET/HEAD return.
STORED_HEADERS: Final = (
    "Cache-Control",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Expires",
)
LIST_PARAMS: Final = frozenset(
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
BUCKET_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
RANGE_RE: Final = re.compile(r"^bytes=(\d*)-(\d*)$")
HEX_RE: Final = re.compile(rb"^[0-9a-fA-F]+$")
OWNER_XML: Final = "<Owner><ID>stub-owner</ID><DisplayName>stub</DisplayName></Owner>"

DEFAULT_MESSAGES: Final[Mapping[str, str]] = {
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
    "XAmzContentSHA256Mismatch": "The provided 'x-amz-content-sha256' header does not match "
    "what was computed.",
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
        self.message = message if message is not None else DEFAULT_MESSAGES.get(code, code)
        self.details = details
        super().__init__(f"{status} {code}: {self.message}")


@dataclass(slots=True)
class RequestCtx:
    """One S3 request as the operations see it: path parts, query (signing parameters
    dropped) and the raw body."""

    request: web.Request
    bucket: str
    key: str
    query: dict[str, str]
    body: bytes
    endpoint: str
    """The stub's ``http://host:port`` (for the ``Location`` of a completed upload)."""


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
        if not HEX_RE.match(size_field):
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


def quoted_md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def iso_date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def xml_response(
    root: str, inner: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    doc = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_XMLNS}">{inner}</{root}>'
    return web.Response(
        status=status, body=doc.encode(), content_type="application/xml", headers=headers
    )


def el(tag: str, value: str | int | bool) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else escape(str(value))
    return f"<{tag}>{text}</{tag}>"


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_xml(body: bytes) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise S3Error(400, "MalformedXML") from exc


def child_text(elem: ElementTree.Element, name: str) -> str | None:
    for child in elem:
        if local_name(child.tag) == name:
            return child.text or ""
    return None


def error_response(exc: S3Error, request_id: str) -> web.Response:
    inner = el("Code", exc.code) + el("Message", exc.message)
    for name, value in exc.details.items():
        inner += el(name, value)
    inner += el("RequestId", request_id) + el("HostId", "s3-stub")
    doc = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'
    return web.Response(status=exc.status, body=doc.encode(), content_type="application/xml")


def classify(method: str, bucket: str, key: str, query: Mapping[str, str], has_copy: bool) -> str:
    """Map a request onto an S3 operation name (``Unsupported`` when not served)."""
    params = set(query)
    if not bucket:
        return "ListBuckets" if method == "GET" and not params else "Unsupported"
    if not key:
        if method == "GET":
            if params == {"location"}:
                return "GetBucketLocation"
            if not params <= LIST_PARAMS:
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


def is_ignored_param(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("x-amz-") or lowered in {
        "x-id",
        "awsaccesskeyid",
        "signature",
        "expires",
    }


def object_attrs(ctx: RequestCtx) -> tuple[str, dict[str, str], dict[str, str]]:
    headers = ctx.request.headers
    metadata = {
        name.lower()[len("x-amz-meta-") :]: value
        for name, value in headers.items()
        if name.lower().startswith("x-amz-meta-")
    }
    stored: dict[str, str] = {}
    for name in STORED_HEADERS:
        value = headers.get(name)
        if name == "Content-Encoding" and value is not None:
            codings = [c.strip() for c in value.split(",")]
            value = ", ".join(c for c in codings if c and c.lower() != "aws-chunked")
        if value:
            stored[name] = value
    return headers.get("Content-Type", DEFAULT_CONTENT_TYPE), metadata, stored


def payload(ctx: RequestCtx) -> bytes:
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
    else:
        verify_payload_hash(headers.get("x-amz-content-sha256"), body)
    verify_checksums(ctx.request, body, trailers)
    return body


def verify_payload_hash(declared: str | None, body: bytes) -> None:
    """A signed payload (``x-amz-content-sha256`` is the body's hex SHA-256, not
    ``UNSIGNED-PAYLOAD``) is checked against the body, as S3 does."""
    if declared is None or len(declared) != 64:
        return
    computed = hashlib.sha256(body).hexdigest()
    if computed != declared.lower():
        raise S3Error(
            400,
            "XAmzContentSHA256Mismatch",
            ClientComputedContentSHA256=declared,
            S3ComputedContentSHA256=computed,
        )


def verify_checksums(request: web.Request, body: bytes, trailers: Mapping[str, str]) -> None:
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


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """Inclusive byte span of a single ``bytes=`` range; None means "whole object"."""
    match = RANGE_RE.match(value.strip())
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
