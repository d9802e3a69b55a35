"""The stub's HTTP server: :class:`S3Stub` listens (aiohttp), counts every S3 request
(:class:`StubStats`), applies the latency and any pending fault, dispatches the operation to
:mod:`~pipeline.testing.s3stub.buckets` / :mod:`~pipeline.testing.s3stub.objects`, and serves
the control API under ``/_stub/``. ``stop()`` stops listening and keeps the data; a later
``start()`` listens again on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from pipeline.testing.s3stub import buckets, objects
from pipeline.testing.s3stub.faults import FaultQueue
from pipeline.testing.s3stub.protocol import (
    CONTROL_PREFIX,
    MIN_PART_SIZE,
    RequestCtx,
    S3Error,
    classify,
    error_response,
    is_ignored_param,
)
from pipeline.testing.s3stub.store import Store, StoredObject, Upload

Operation = Callable[[Store, RequestCtx], web.Response]

#: S3 operation name -> what answers it.
OPERATIONS: dict[str, Operation] = {
    "ListBuckets": buckets.list_buckets,
    "CreateBucket": buckets.create_bucket,
    "HeadBucket": buckets.head_bucket,
    "DeleteBucket": buckets.delete_bucket,
    "GetBucketLocation": buckets.get_bucket_location,
    "ListObjects": buckets.list_objects,
    "ListObjectsV2": buckets.list_objects,
    "DeleteObjects": buckets.delete_objects,
    "PutObject": objects.put_object,
    "GetObject": objects.get_object,
    "HeadObject": objects.get_object,
    "DeleteObject": objects.delete_object,
    "CreateMultipartUpload": objects.create_multipart_upload,
    "UploadPart": objects.upload_part,
    "CompleteMultipartUpload": objects.complete_multipart_upload,
    "AbortMultipartUpload": objects.abort_multipart_upload,
}


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
        self.shutdown_timeout_s = shutdown_timeout_s
        """How long ``stop()`` lets in-flight requests finish before cancelling them."""
        self.stats = StubStats()
        self.store = Store(min_part_size=min_part_size)
        self._faults = FaultQueue()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ the store

    @property
    def buckets(self) -> dict[str, float]:
        """Bucket name -> creation time."""
        return self.store.buckets

    @property
    def objects(self) -> dict[tuple[str, str], StoredObject]:
        return self.store.objects

    @property
    def uploads(self) -> dict[str, Upload]:
        """Multipart uploads in progress, by upload id."""
        return self.store.uploads

    @property
    def min_part_size(self) -> int:
        """Minimum size of every part but the last (S3: 5 MiB); 0 disables the check."""
        return self.store.min_part_size

    @min_part_size.setter
    def min_part_size(self, value: int) -> None:
        self.store.min_part_size = value

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
        self.store.reset()

    def create_bucket(self, name: str) -> None:
        """Create a bucket directly (no request); existing buckets are left alone."""
        self.store.create_bucket(name)

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
        self._faults.fail_next(n, status, code, ops=ops)

    def fail_all(self, status: int, code: str, *, ops: Iterable[str] | str | None = None) -> None:
        """Answer every S3 request (of ``ops``, if given) with ``status``/``code`` until
        ``clear_faults()``."""
        self._faults.fail_all(status, code, ops=ops)

    def drop_next(self, n: int, *, ops: Iterable[str] | str | None = None) -> None:
        """Close the connection of the next ``n`` S3 requests without answering."""
        self._faults.drop_next(n, ops=ops)

    def drop_all(self, *, ops: Iterable[str] | str | None = None) -> None:
        """Close the connection of every S3 request without answering, until cleared."""
        self._faults.drop_all(ops=ops)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[dict[str, Any]]:
        """Pending faults, in the order they apply."""
        return self._faults.pending()

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
                resp = error_response(exc, request_id)
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
            if not is_ignored_param(name)
        }
        op = classify(request.method, bucket, key, query, "x-amz-copy-source" in request.headers)
        stats.by_op[op] += 1

        chunks = bytearray()
        async for chunk in request.content.iter_any():
            stats.bytes_in += len(chunk)
            chunks += chunk
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

        fault = self._faults.take(op)
        if fault is not None:
            stats.faults_injected += 1
            if fault.status == 0:
                request.protocol.force_close()
                return None
            raise S3Error(fault.status, fault.code)
        operation = OPERATIONS.get(op)
        if operation is None:
            raise S3Error(501, "NotImplemented")
        ctx = RequestCtx(request, bucket, key, query, bytes(chunks), self.endpoint)
        resp = operation(self.store, ctx)
        if op == "GetObject":
            stats.bytes_out += resp.content_length or 0
        return resp

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
