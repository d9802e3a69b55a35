"""The retry policy's verdicts (pure): what is worth another try and what is not."""

from __future__ import annotations

import pytest
from redis.exceptions import ExecAbortError, OutOfMemoryError

from pipeline.errors import PermanentError, TransientError
from pipeline.runtime.memory import is_out_of_memory
from pipeline.runtime.retry import classify, redis_cannot_write, retry_delay
from pipeline.settings import Settings


class _ClientError(Exception):
    """Shaped like botocore's ClientError (a ``response`` dict)."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.response = {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }


@pytest.mark.parametrize(
    ("exc", "transient", "code"),
    [
        (TransientError("flaky", code="flaky"), True, "flaky"),
        (PermanentError("bad", code="bad"), False, "bad"),
        (_ClientError(503, "SlowDown"), True, "SlowDown"),
        (_ClientError(500, "InternalError"), True, "InternalError"),
        (_ClientError(403, "AccessDenied"), False, "AccessDenied"),
        (_ClientError(404, "NoSuchBucket"), False, "NoSuchBucket"),
        (TimeoutError(), True, "TimeoutError"),
        (ConnectionResetError("reset"), True, "ConnectionResetError"),
        (ValueError("nope"), False, "ValueError"),
        (KeyError("k"), False, "KeyError"),
        (IndexError("i"), False, "IndexError"),
        # bugs fail the same way every time: never retried
        (AttributeError("'NoneType' object has no attribute 'shape'"), False, "AttributeError"),
        (NameError("x"), False, "NameError"),
        (ZeroDivisionError("division by zero"), False, "ZeroDivisionError"),
        (NotImplementedError("later"), False, "NotImplementedError"),
        # anything else unknown is given another try
        (RuntimeError("odd"), True, "RuntimeError"),
    ],
)
def test_verdicts(exc: BaseException, transient: bool, code: str) -> None:
    verdict = classify(exc)
    assert (verdict.transient, verdict.code) == (transient, code)
    assert verdict.reason


def test_a_bug_says_it_is_one() -> None:
    assert "a bug" in classify(AttributeError("x")).reason


def test_retry_delays_then_give_up() -> None:
    settings = Settings(retry_delays_s=[1.0, 2.0])
    assert [retry_delay(settings, t) for t in (1, 2, 3)] == [1.0, 2.0, None]


def test_redis_at_maxmemory_is_recognised_also_inside_a_multi() -> None:
    """arq's own MULTI (the start of every job) fails at maxmemory as EXECABORT, not OOM:
    it still means "Redis cannot take writes now" (a worker once exited on it)."""
    oom = "OOM command not allowed when used memory > 'maxmemory'."
    aborted = ExecAbortError(f"Transaction discarded because of: {oom}")
    assert redis_cannot_write(OutOfMemoryError(oom))
    assert redis_cannot_write(aborted)
    assert is_out_of_memory(aborted)
    assert not redis_cannot_write(ExecAbortError("Transaction discarded because of: ERR syntax"))
    assert not redis_cannot_write(ValueError(oom))
