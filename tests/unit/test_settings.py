"""Settings refuse combinations that would lose work."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.settings import Settings


def test_session_records_must_outlive_the_deadline() -> None:
    with pytest.raises(ValidationError, match="PLANTPIPE_SESSION_TTL_S"):
        Settings(session_ttl_s=600, session_deadline_s=1800)
    assert Settings(session_ttl_s=1801, session_deadline_s=1800).session_ttl_s == 1801


def test_the_watchdog_cron_is_named_after_the_key_prefix() -> None:
    from workers.cpu import worker_options

    crons = worker_options(Settings(key_prefix="depl-a"))["cron_jobs"]
    assert [c.name for c in crons] == ["depl-a:watchdog"]
