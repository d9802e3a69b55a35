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
501 NotImplemented.  ``Content-MD5``, ``x-amz-checksum-{crc32,sha1,sha256}`` and a signed
payload's hash (``x-amz-content-sha256``) are verified when sent, as S3 does; ``aws-chunked``
bodies are decoded.

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

Run as a process: ``python -m pipeline.testing.s3stub --port 9000 --latency-ms 50`` prints
``ready http://127.0.0.1:9000`` on stdout once it listens, and stops on SIGINT/SIGTERM.

The package, by job: :mod:`~pipeline.testing.s3stub.protocol` (the wire format: operation
names, XML, errors, ``aws-chunked``, digests, ranges), :mod:`~pipeline.testing.s3stub.store`
(buckets, objects, multipart state), :mod:`~pipeline.testing.s3stub.buckets` and
:mod:`~pipeline.testing.s3stub.objects` (the operations), :mod:`~pipeline.testing.s3stub.faults`
(fault injection), :mod:`~pipeline.testing.s3stub.server` (the aiohttp server, its stats,
lifecycle and control API) and :mod:`~pipeline.testing.s3stub.cli` (the process).
"""

from pipeline.testing.s3stub.cli import main
from pipeline.testing.s3stub.protocol import DEFAULT_CONTENT_TYPE, S3Error, decode_aws_chunked
from pipeline.testing.s3stub.server import S3Stub, StubStats
from pipeline.testing.s3stub.store import StoredObject

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "S3Error",
    "S3Stub",
    "StoredObject",
    "StubStats",
    "decode_aws_chunked",
    "main",
]
