"""arq's cron tests count runs of ``cron(hour=1)`` in local time: the suite's TZ avoids hour 1."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from tests.arq_suite.__main__ import CRON_TEST_HOUR, SUITE_WINDOW_S, suite_timezone


def _local_hours(tz: str, start: datetime) -> set[int]:
    """The local hours of ``start`` and ``SUITE_WINDOW_S`` later, as a process under ``tz``
    (the C library's reading of it, as arq's ``datetime.now().astimezone()`` does) sees them."""
    code = "import sys, time\nfor t in map(float, sys.argv[1:]): print(time.localtime(t).tm_hour)\n"
    stamps = [start.timestamp(), (start + timedelta(seconds=SUITE_WINDOW_S)).timestamp()]
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, stamps)],
        env={**os.environ, "TZ": tz},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {int(h) for h in out.split()}


def test_the_suite_never_runs_in_the_cron_tests_hour() -> None:
    day = datetime(2026, 12, 8, tzinfo=UTC)
    for minutes in range(0, 24 * 60, 7):
        start = day + timedelta(minutes=minutes)
        tz = suite_timezone(start)
        assert CRON_TEST_HOUR not in _local_hours(tz, start), (start, tz)


def test_utc_is_kept_away_from_the_cron_hour() -> None:
    noon = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    assert suite_timezone(noon) == "UTC0"
    assert suite_timezone(noon.replace(hour=1, minute=30)) != "UTC0"
    assert suite_timezone(noon.replace(hour=0, minute=50)) != "UTC0"  # the window reaches 01:05
