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
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
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
