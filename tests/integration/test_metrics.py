"""A worker's Prometheus endpoint is scraped and its counters move."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.client import PipelineClient
from pipeline.runtime.registry import list_workers
from tests.conftest import SettingsFactory, settings_env

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def fetch(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""


def value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$"
        if labels
        else (rf"^{re.escape(name)} (\S+)$")
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_io_worker_metrics_move(
    localstack: str, make_settings: SettingsFactory, redis: Redis, worker_processes: Any
) -> None:
    settings = make_settings(metrics_port=0)
    worker = worker_processes("io", settings_env(settings))
    await worker.wait_for("io.started")
    async with PipelineClient(settings) as client:
        found = [w for w in await list_workers(client.redis, settings) if w.role == "io"]
        assert len(found) == 1
        port = int(found[0].detail["metrics_port"])
        before = await asyncio.to_thread(scrape, port)
        handles = [
            await client.upload(f"m/{i}", b"x" * 1000, content_type="text/plain") for i in range(7)
        ]
        await asyncio.gather(*(h.wait(timeout=30) for h in handles))
        await asyncio.sleep(2.5)  # gauges refresh every 2 s
        after = await asyncio.to_thread(scrape, port)
    started = "plantpipe_jobs_started_total"
    finished = "plantpipe_jobs_finished_total"
    assert (
        value(after, started, role="io", function="upload")
        - value(before, started, role="io", function="upload")
        == 7
    )
    assert value(after, finished, role="io", function="upload", outcome="ok") == 7
    assert (
        value(after, "plantpipe_upload_bytes_total") - value(before, "plantpipe_upload_bytes_total")
        == 7000
    )
    assert value(after, "plantpipe_job_duration_seconds_count", role="io", function="upload") == 7
    assert f'plantpipe_queue_depth{{queue="{settings.key_prefix}:queue:io"}}' in after
    assert "plantpipe_breaker_state 0.0" in after
    assert await asyncio.to_thread(fetch, port, "/health") == (200, b'{"status": "ok"}\n')
    assert (await asyncio.to_thread(fetch, port, "/nope"))[0] == 404
