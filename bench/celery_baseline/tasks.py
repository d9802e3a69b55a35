"""Celery app of the baseline: the original's io task (boto3 ``put_object`` with the bytes in
the task arguments, as the original's ``upload_*_s3_task(file_bytes, …)`` did) and the no-op
tasks of a chord.

Configured from the environment by the benchmark: ``CELERY_BENCH_BROKER`` (broker and result
backend, Redis db 13), ``CELERY_BENCH_QUEUE``, ``CELERY_BENCH_S3_ENDPOINT``,
``CELERY_BENCH_S3_BUCKET``. Run as
``celery -A bench.celery_baseline.tasks worker --pool=gevent --concurrency=50 -Q QUEUE``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config
from celery import Celery
from celery.signals import worker_ready

BROKER = os.environ.get("CELERY_BENCH_BROKER", "redis://127.0.0.1:6379/13")
QUEUE = os.environ.get("CELERY_BENCH_QUEUE", "plantpipe-bench")
S3_ENDPOINT = os.environ.get("CELERY_BENCH_S3_ENDPOINT", "http://127.0.0.1:9000")
S3_BUCKET = os.environ.get("CELERY_BENCH_S3_BUCKET", "plantpipe-bench")

app: Any = Celery("plantpipe_bench", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
    task_send_sent_event=False,
)

_s3: Any = None


def s3() -> Any:
    """One boto3 client per worker process, shared by the greenlets (boto3 clients are
    thread-safe). Same settings as plantpipe's: 50 pooled connections, path-style, no SDK
    retries, checksums only when required."""
    global _s3
    if _s3 is None:
        _s3 = boto3.client(
            "s3",
            endpoint_url=S3_ENDPOINT,
            region_name="us-east-1",
            config=Config(
                max_pool_connections=50,
                connect_timeout=5,
                read_timeout=30,
                retries={"total_max_attempts": 1, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
            ),
        )
    return _s3


def _upload(key: str, file_bytes: bytes, content_type: str) -> dict[str, Any]:
    resp = s3().put_object(Bucket=S3_BUCKET, Key=key, Body=file_bytes, ContentType=content_type)
    return {"key": key, "etag": resp.get("ETag"), "size": len(file_bytes)}


def _ensure_bucket() -> bool:
    client = s3()
    try:
        client.head_bucket(Bucket=S3_BUCKET)
    except Exception:
        client.create_bucket(Bucket=S3_BUCKET)
    return True


def _noop(index: int) -> int:
    return index


def _collect(results: list[int], done_key: str) -> int:
    """Chord body: record when it ran, with every child's result in hand."""
    now = time.time()
    client = app.backend.client
    client.rpush(done_key, repr(now))
    client.expire(done_key, 600)
    return len(results)


upload = app.task(name="bench.upload")(_upload)
ensure_bucket = app.task(name="bench.ensure_bucket")(_ensure_bucket)
noop = app.task(name="bench.noop")(_noop)
collect = app.task(name="bench.collect")(_collect)


def _on_ready(**_kwargs: Any) -> None:
    app.backend.client.set(f"{QUEUE}:ready", "1", ex=3600)


worker_ready.connect(_on_ready, weak=False)
