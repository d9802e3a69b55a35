"""arq glue: Redis settings, msgpack serialization, queue names and the retry policy.

Jobs never travel as pickle: every queue uses msgpack. Exceptions that arq stores as failed
job results are encoded as a msgpack extension (type name + message), never pickled.

Retry policy: an exception is classified as transient (timeouts, 5xx, throttling, connection
resets) or permanent (4xx such as AccessDenied/NoSuchBucket, invalid input). Transient errors
retry through arq's ``Retry`` after ``retry_delays_s`` (2 s, 4 s, 8 s by default); permanent
ones fail at once with their reason recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlparse

import msgpack
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job
from arq.worker import Retry
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.errors import PermanentError, PipelineError, TransientError
from pipeline.settings import Settings

_EXC_EXT: Final = 1


class RemoteJobError(RuntimeError):
    """A job failure decoded from Redis: the original exception's type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        payload = msgpack.packb([type(obj).__name__, str(obj)], use_bin_type=True)
        return msgpack.ExtType(_EXC_EXT, payload)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "model_dump"):  # pydantic models
        return obj.model_dump(mode="json")
    raise TypeError(f"cannot serialize {type(obj).__name__} into a job payload")


def _decode_ext(code: int, data: bytes) -> Any:
    if code == _EXC_EXT:
        type_name, message = msgpack.unpackb(data, raw=False)
        return RemoteJobError(str(type_name), str(message))
    return msgpack.ExtType(code, data)


def serialize(obj: dict[str, Any]) -> bytes:
    """arq job_serializer: msgpack, never pickle."""
    packed: bytes = msgpack.packb(obj, default=_encode_default, use_bin_type=True)
    return packed


def deserialize(data: bytes) -> dict[str, Any]:
    """arq job_deserializer."""
    obj = msgpack.unpackb(data, raw=False, ext_hook=_decode_ext, strict_map_key=False)
    if not isinstance(obj, dict):
        raise ValueError("job payload is not a msgpack map")
    return obj


@dataclass(frozen=True)
class QueueNames:
    io: str
    cpu: str
    gpu: str

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueNames:
        p = settings.key_prefix
        return cls(io=f"{p}:queue:io", cpu=f"{p}:queue:cpu", gpu=f"{p}:queue:gpu")


# --- enqueue with a wake-up --------------------------------------------------------------
#
# arq workers poll their queue (every ``poll_delay_s``), so a job enqueued right after a poll
# waits for the next one, and a chain of jobs (child → callback) pays that wait at each step.
# ``enqueue`` also drops a token on the queue's wake list; plantpipe's workers
# (``pipeline.arq_worker``) block on that list between polls for up to ``poll_delay_s``
# instead of sleeping, so they start a job as soon as it is queued. The list holds at most one
# token and expires: it never grows and never outlives its use.

WAKE_TTL_MS: Final = 60_000


def wake_key(queue_name: str) -> str:
    return f"{queue_name}:wake"


async def enqueue(
    redis: ArqRedis,
    function: str,
    *args: Any,
    _queue_name: str,
    _job_id: str | None = None,
    **kwargs: Any,
) -> Job | None:
    """``redis.enqueue_job`` plus a wake-up for the queue's workers (when the job is due now).
    Returns arq's ``Job``, or None when a job with that id already exists."""
    job = await redis.enqueue_job(
        function, *args, _job_id=_job_id, _queue_name=_queue_name, **kwargs
    )
    if job is not None and "_defer_by" not in kwargs and "_defer_until" not in kwargs:
        key = wake_key(_queue_name)
        client: Any = redis
        async with client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, b"1")
            pipe.ltrim(key, 0, 0)
            pipe.pexpire(key, WAKE_TTL_MS)
            await pipe.execute()
    return job


def redis_settings(settings: Settings) -> RedisSettings:
    """arq RedisSettings from ``PLANTPIPE_REDIS_URL``.

    Accepts ``redis://``, ``rediss://`` (TLS), ``unix:///path?db=N`` and
    ``redis+sentinel://[:password@]host:port[,host:port]/service_name[/db]``.
    """
    url = settings.redis_url
    common: dict[str, Any] = {
        "conn_timeout": int(max(1, settings.redis_conn_timeout_s)),
        "conn_retries": settings.redis_conn_retries,
        "conn_retry_delay": 1,
        # Ride out a Redis restart: commands *and new connections* retry with backoff (~30 s
        # in all) before the worker gives up. redis-py retries a refused or reset connect
        # only when the builtin ConnectionError is listed: without it a worker's poll loop
        # died the moment Redis was unreachable.
        "retry": RedisRetry(ExponentialBackoff(cap=5.0, base=0.2), retries=10),
        "retry_on_error": [
            RedisConnectionError,
            RedisTimeoutError,
            BusyLoadingError,
            ConnectionError,
        ],
    }
    parsed = urlparse(url)
    if parsed.scheme == "redis+sentinel":
        hosts: list[tuple[str, int]] = []
        netloc = parsed.netloc.rsplit("@", 1)[-1]
        for part in netloc.split(","):
            host, _, port = part.partition(":")
            hosts.append((host, int(port or 26379)))
        path = [p for p in parsed.path.split("/") if p]
        if not path:
            raise ValueError(f"sentinel URL needs a service name: {url!r}")
        password = unquote(parsed.password) if parsed.password else None
        return RedisSettings(
            host=hosts,
            sentinel=True,
            sentinel_master=path[0],
            database=int(path[1]) if len(path) > 1 else 0,
            password=password,
            **common,
        )
    if parsed.scheme == "unix":
        query = parse_qs(parsed.query)
        return RedisSettings(
            unix_socket_path=parsed.path,
            database=int(query.get("db", ["0"])[0]),
            password=unquote(parsed.password) if parsed.password else None,
            **common,
        )
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported Redis URL scheme {parsed.scheme!r} in {url!r}")
    rs = RedisSettings.from_dsn(url)
    for name, value in common.items():
        setattr(rs, name, value)
    if parsed.scheme == "rediss":
        rs.ssl_cert_reqs = "required"
        rs.ssl_check_hostname = True  # a certificate for another host is refused
    return rs


def fail_fast(rs: RedisSettings) -> RedisSettings:
    """The same connection without retries: one attempt, for a quick "is Redis there?"."""
    return dataclasses.replace(rs, retry=None, retry_on_error=None, conn_retries=0)


# --- retry policy -----------------------------------------------------------------------

_TRANSIENT_S3_CODES: Final = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "TooManyRequestsException",
    }
)


@dataclass(frozen=True)
class Classified:
    transient: bool
    code: str
    reason: str


def describe(exc: BaseException) -> str:
    """``"Name: message"``; an exception without a message (a bare ``TimeoutError``) still
    says what it was."""
    name, message = type(exc).__name__, str(exc).strip()
    if message:
        return f"{name}: {message}"
    if isinstance(exc, TimeoutError):
        return f"{name}: the operation did not finish within its time budget"
    return f"{name} (no message)"


def classify(exc: BaseException) -> Classified:
    """Decide whether ``exc`` is worth retrying, with a code and a reason for the record."""
    if isinstance(exc, PermanentError):
        return Classified(False, exc.code, exc.reason)
    if isinstance(exc, TransientError):
        return Classified(True, exc.code, exc.reason)
    if isinstance(exc, PipelineError):
        return Classified(False, exc.code, exc.reason)
    code, reason = getattr(exc, "code", None), getattr(exc, "reason", None)
    if isinstance(exc, ValueError) and isinstance(code, str) and isinstance(reason, str):
        return Classified(False, code, reason)  # e.g. InvalidImage: bad input, never retried
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:  # botocore ClientError
        err = response.get("Error", {})
        code = str(err.get("Code") or "Unknown")
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = str(err.get("Message") or exc)
        reason = f"S3 answered {status} {code}: {message}"
        if code in _TRANSIENT_S3_CODES or status >= 500 or status in (408, 429):
            return Classified(True, code, reason)
        return Classified(False, code, reason)
    name = type(exc).__name__
    if name == "ParamValidationError" or (
        name == "HTTPClientError"
        and isinstance(getattr(exc, "kwargs", {}).get("error"), ValueError)
    ):
        # The request could not even be built (bad metadata, header injection): permanent.
        return Classified(False, name, describe(exc))
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError, OSError)):
        return Classified(True, name, describe(exc))
    module = type(exc).__module__
    if module.startswith(("botocore", "aiobotocore", "aiohttp", "redis")):
        # Endpoint/connection/read-timeout errors of the S3 and Redis clients.
        return Classified(True, name, describe(exc))
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return Classified(False, name, describe(exc))
    return Classified(True, name, describe(exc))


def retry_delay(settings: Settings, job_try: int) -> float | None:
    """Delay before the next try after failed try number ``job_try`` (1-based); None = give up."""
    delays = settings.retry_delays_s
    if job_try <= len(delays):
        return delays[job_try - 1]
    return None


def retry_or_none(settings: Settings, job_try: int, exc: BaseException) -> Retry | None:
    """An arq ``Retry`` for a transient error with tries left, else None (the job fails now)."""
    verdict = classify(exc)
    if not verdict.transient:
        return None
    delay = retry_delay(settings, job_try)
    if delay is None:
        return None
    return Retry(defer=delay)


def arq_max_tries(settings: Settings) -> int:
    """arq's own ceiling: our retries plus headroom for re-runs after a worker crash."""
    return len(settings.retry_delays_s) + 3
