"""``plantpipe workers --processes N``: N processes per role, each a live worker, all stopped
by one SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pipeline.embedded import drop_prefix
from pipeline.runtime.registry import list_workers
from pipeline.settings import Settings
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.e2e

PLANTPIPE = str(Path(sys.executable).with_name("plantpipe"))


async def test_two_io_processes_run_and_stop_together(tmp_path: Path) -> None:
    prefix = f"ppworkers{os.getpid()}"
    settings = Settings(redis_url=REDIS_URL, key_prefix=prefix, storage=str(tmp_path / "store"))
    env = settings.to_env(os.environ)
    proc = subprocess.Popen(
        [PLANTPIPE, "workers", "--roles", "io", "--processes", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    redis = Redis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + 60
        while len(live := await list_workers(redis, settings)) < 2:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "two io workers did not register in 60 s"
            await asyncio.sleep(0.2)
        assert sorted(w.role for w in live) == ["io", "io"]
        assert len({w.pid for w in live}) == 2
        assert (tmp_path / ".plantpipe-logs" / "io-1.log").exists()
        assert (tmp_path / ".plantpipe-logs" / "io-2.log").exists()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "io-1, io-2" in output
    finally:
        if proc.poll() is None:
            proc.kill()
        await drop_prefix(REDIS_URL, prefix)
        await redis.aclose()


def test_redis_down_is_said_on_the_console_at_once_and_the_exit_in_one_line(
    tmp_path: Path,
) -> None:
    """Not only in .plantpipe-logs/io.log: the console says Redis is unreachable within
    seconds, then why the worker exited, without a traceback."""
    env = dict(os.environ) | {
        "PLANTPIPE_REDIS_URL": "redis://127.0.0.1:6399/0",
        "PLANTPIPE_REDIS_CONN_RETRIES": "0",
    }
    started = time.monotonic()
    proc = subprocess.run(
        [PLANTPIPE, "workers", "--roles", "io"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text
    lines = proc.stderr.splitlines()
    assert any(
        line.startswith("io: io worker: Redis at redis://127.0.0.1:6399/0 is not reachable")
        for line in lines
    ), text
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach Redis at redis://127.0.0.1:6399/0" in errors[0]
    assert time.monotonic() - started < 200


def test_arq_with_a_missing_bucket_is_one_line_and_exit_2(tmp_path: Path, localstack: str) -> None:
    env = dict(os.environ) | {
        "PLANTPIPE_REDIS_URL": REDIS_URL,
        "PLANTPIPE_KEY_PREFIX": f"ppnobucket{os.getpid()}",
        "PLANTPIPE_S3_ENDPOINT_URL": localstack,
        "PLANTPIPE_S3_BUCKET": "no-such-bucket-for-plantpipe",
        "PLANTPIPE_STORAGE": "s3",
    }
    arq = str(Path(sys.executable).with_name("arq"))
    proc = subprocess.run(
        [arq, "workers.io.WorkerSettings"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: io worker cannot start: bucket 'no-such-bucket-for-plantpipe' does not exist at "
        f"s3://no-such-bucket-for-plantpipe at {localstack}; create it or set "
        "PLANTPIPE_S3_CREATE_BUCKET=1"
    ], text
    asyncio.run(drop_prefix(REDIS_URL, env["PLANTPIPE_KEY_PREFIX"]))
