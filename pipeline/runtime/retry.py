"""Retry policy: is a failure worth another try, and when.

An exception is classified as transient (timeouts, 5xx, throttling, connection resets) or
permanent (4xx such as AccessDenied/NoSuchBucket, invalid input). Transient errors retry
through arq's ``Retry`` after ``retry_delays_s`` (2 s, 4 s, 8 s by default); permanent ones
fail at once with their reason recorded (``pipeline.runtime.job`` applies the verdict).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ExecAbortError, OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.errors import PermanentError, PipelineError, TransientError
from pipeline.runtime.memory import is_out_of_memory
from pipeline.settings import Settings

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


PROGRAMMING_ERRORS: Final = (
    AttributeError,
    NameError,
    ImportError,
    AssertionError,
    NotImplementedError,
    ArithmeticError,
)


#: Redis errors that say nothing about the work: Redis cannot take writes now (full at
#: maxmemory, or unreachable past the ride-out).
REDIS_CANNOT_WRITE: tuple[type[Exception], ...] = (
    OutOfMemoryError,
    RedisConnectionError,
    RedisTimeoutError,
)


def redis_cannot_write(exc: BaseException) -> bool:
    """Redis cannot take writes now (:data:`REDIS_CANNOT_WRITE`), also when it says so as the
    EXECABORT of a MULTI whose write it refused at ``maxmemory`` (arq's own transactions)."""
    return isinstance(exc, REDIS_CANNOT_WRITE) or (
        isinstance(exc, ExecAbortError) and is_out_of_memory(exc)
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
    if isinstance(exc, (ValueError, TypeError, LookupError)):
        return Classified(False, name, describe(exc))
    if isinstance(exc, PROGRAMMING_ERRORS):
        # A bug (ours, or a user's model or plugin) fails the same way on every try.
        return Classified(False, name, f"{describe(exc)} (a bug, not a passing fault: report it)")
    return Classified(True, name, describe(exc))


def retry_delay(settings: Settings, job_try: int) -> float | None:
    """Delay before the next try after failed try number ``job_try`` (1-based); None = give up."""
    delays = settings.retry_delays_s
    if job_try <= len(delays):
        return delays[job_try - 1]
    return None


def arq_max_tries(settings: Settings) -> int:
    """arq's own ceiling: our retries plus headroom for re-runs after a worker crash."""
    return len(settings.retry_delays_s) + 3
