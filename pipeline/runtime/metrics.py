"""Prometheus metrics of a worker process: jobs, durations, queue depth, uploads, breaker.

Enabled with ``PLANTPIPE_METRICS_PORT`` (0 picks a free port; the port is logged and shown
by ``plantpipe workers --list``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, MetricsHandler

from pipeline.runtime.context import RoleContext
from pipeline.state.redisio import typed

JOBS_STARTED = Counter("plantpipe_jobs_started_total", "jobs started", ["role", "function"])
JOBS_FINISHED = Counter(
    "plantpipe_jobs_finished_total",
    "jobs finished, by outcome (ok, failed, retried, deferred, error)",
    ["role", "function", "outcome"],
)
JOB_SECONDS = Histogram(
    "plantpipe_job_duration_seconds",
    "job wall time",
    ["role", "function"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_DEPTH = Gauge("plantpipe_queue_depth", "jobs waiting in a queue", ["queue"])
UPLOADS_IN_FLIGHT = Gauge("plantpipe_uploads_in_flight", "S3 requests in flight")
UPLOAD_BYTES = Counter("plantpipe_upload_bytes_total", "bytes uploaded")
BREAKER_STATE = Gauge(
    "plantpipe_breaker_state", "S3 circuit breaker: 0 closed, 1 half-open, 2 open"
)
BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}


class _Handler(MetricsHandler):
    """``/metrics`` (Prometheus text), ``/health`` (``{"status": "ok"}`` while the process
    serves: the probes' path), anything else 404."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            super().do_GET()
            return
        ok = path == "/health"
        body = b'{"status": "ok"}\n' if ok else b"not found: /metrics or /health\n"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json" if ok else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # probes every few seconds: not worth a log line each


def start_server(port: int) -> int:
    """Serve /metrics and /health on ``port`` (0 = any free port); returns the bound port."""
    server = ThreadingHTTPServer(("0.0.0.0", port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return int(server.server_port)


def job_started(role: str, function: str) -> None:
    JOBS_STARTED.labels(role, function).inc()


def job_finished(role: str, function: str, outcome: str, seconds: float) -> None:
    JOBS_FINISHED.labels(role, function, outcome).inc()
    JOB_SECONDS.labels(role, function).observe(seconds)


async def sample_forever(context: RoleContext, interval_s: float = 2.0) -> None:
    """Refresh gauges that live in Redis or in the store (queue depth, in-flight, breaker).
    ``context`` is the role's ``RoleContext``; the io role's also holds a store and breaker."""
    queues = context.queues
    while True:
        with contextlib.suppress(Exception):  # a metrics blip must never hurt the worker
            for name in (queues.io, queues.cpu, queues.gpu):
                QUEUE_DEPTH.labels(name).set(await typed(context.redis).zcard(name))
            store = getattr(context, "store", None)
            if store is not None and hasattr(store, "in_flight"):
                UPLOADS_IN_FLIGHT.set(store.in_flight)
            breaker = getattr(context, "breaker", None)
            if breaker is not None:
                BREAKER_STATE.set(BREAKER_CODES[await breaker.state()])
        await asyncio.sleep(interval_s)
