"""When a permanent-looking failure is retried because a Redis failover may explain it:
the process's failover clock, and the decision built on it (pure logic, no Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import PermanentError
from pipeline.runtime import replication
from pipeline.runtime.replication import FailoverClock, failover_retry_delay
from pipeline.settings import Settings
from pipeline.state.blobs import BlobMissing

SENTINEL_URL = "redis+sentinel://127.0.0.1:26379/plantpipe"


def reading(replid: str, promoted: bool = False) -> dict[str, Any]:
    """One ``INFO replication`` answer of a master."""
    return {"master_replid": replid, "second_repl_offset": 1234 if promoted else -1}


def test_a_master_that_was_never_a_replica_is_no_recent_failover() -> None:
    clock = FailoverClock()
    assert clock.note(reading("a" * 40)) == "a" * 40
    assert not clock.recent()


def test_a_new_replication_id_is_a_failover_seen_now() -> None:
    clock = FailoverClock()
    clock.note(reading("a" * 40))
    clock.note(reading("a" * 40))
    assert not clock.recent()
    clock.note(reading("b" * 40, promoted=True))
    assert clock.recent()
    assert not clock.recent(within_s=0.0)


def test_a_process_starting_on_a_promoted_master_counts_the_failover_as_recent() -> None:
    clock = FailoverClock()
    clock.note(reading("b" * 40, promoted=True))
    assert clock.recent()


def context(redis_url: str = SENTINEL_URL, **settings: Any) -> Settings:
    return Settings(redis_url=redis_url, retry_delays_s=[1.0, 2.0], **settings)


@pytest.fixture
def failed_over(monkeypatch: pytest.MonkeyPatch) -> FailoverClock:
    clock = FailoverClock()
    clock.note(reading("a" * 40))
    clock.note(reading("b" * 40, promoted=True))
    monkeypatch.setattr(replication, "FAILOVERS", clock)
    return clock


def test_a_missing_blob_right_after_a_failover_is_retried(failed_over: FailoverClock) -> None:
    missing = BlobMissing("blob 1234… is gone")
    assert failover_retry_delay(context(), missing, attempt=1) == 1.0
    assert failover_retry_delay(context(), missing, attempt=2) == 2.0
    assert failover_retry_delay(context(), missing, attempt=3) is None  # out of tries


def test_only_failures_a_failover_can_explain_are_retried(failed_over: FailoverClock) -> None:
    assert failover_retry_delay(context(), PermanentError("bad image"), attempt=1) is None
    assert failover_retry_delay(context(), ValueError("bug"), attempt=1) is None


def test_without_sentinel_or_without_a_recent_failover_nothing_is_retried(
    failed_over: FailoverClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = BlobMissing("blob 1234… is gone")
    assert failover_retry_delay(context("redis://127.0.0.1:6379/0"), missing, attempt=1) is None
    assert failover_retry_delay(context(redis_replica_acks=0), missing, attempt=1) is None
    quiet = FailoverClock()
    quiet.note(reading("a" * 40))
    monkeypatch.setattr(replication, "FAILOVERS", quiet)
    assert failover_retry_delay(context(), missing, attempt=1) is None
