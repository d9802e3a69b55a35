"""Redis dies (kill -9) mid-load and comes back from its AOF on the same port: in-flight work
resumes or is re-driven and every session ends truthfully."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.client import PipelineClient
from tests.faults.conftest import (
    ClusterFactory,
    Expected,
    FaultReport,
    RedisServer,
    bucket_objects,
    check_sessions,
    describe_stuck,
    dump_logs,
    scaled,
    small_photo,
)

pytestmark = pytest.mark.faults

SESSIONS = 8
PHOTOS = 5
DOWN_S = 3.0


async def retrying(call: Callable[[], Any], timeout: float) -> Any:
    """Run ``call()`` again while Redis is unreachable (a client riding out a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (ConnectionError, OSError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis still unreachable: {exc}") from exc
            await asyncio.sleep(0.2)
        except Exception as exc:  # redis.exceptions.ConnectionError/BusyLoadingError
            if "redis" not in type(exc).__module__ or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_redis_kill9_and_aof_restart_mid_load(
    make_fault_cluster: ClusterFactory,
    private_redis: Callable[..., RedisServer],
    localstack: str,
    fault_report: FaultReport,
    tmp_path: Path,
) -> None:
    server = private_redis("aof", aof=True)
    cluster = make_fault_cluster(
        redis_url=server.url(0), gpu_job_timeout_s=3, cpu_job_timeout_s=5, io_job_timeout_s=5
    )
    await cluster.start("io", "cpu", "gpu")
    inputs = [[small_photo(4000 + s * PHOTOS + i) for i in range(PHOTOS)] for s in range(SESSIONS)]
    expected: list[Expected] = []
    async with PipelineClient(cluster.settings) as client:
        for photos in inputs[: SESSIONS // 2]:
            sid = await client.submit([d for d, _ in photos])
            expected.append(Expected(sid, [n for _, n in photos]))
        await asyncio.sleep(1.0)  # work is in flight in every role
        server.kill9()
        killed = time.monotonic()
        await asyncio.sleep(DOWN_S)
        server.start()  # same port, same --dir: the AOF is replayed
        fault_report.redis_restarts += 1
        await asyncio.sleep(3.0)  # give workers a chance to reconnect on their own
        exited = {
            role: proc.proc.returncode
            for role, proc in cluster.workers.items()
            if proc.proc.poll() is not None
        }
        last_words = {
            role: next(
                (line for line in reversed(cluster.workers[role].lines) if "Error" in line), "?"
            )[-160:]
            for role in exited
        }
        dead = [cluster.workers[role] for role in exited]
        if dead:
            dump_logs(tmp_path, dead)  # why a worker exited, for the post-mortem
        for role in exited:
            cluster.workers.pop(role)
            await cluster.start(role)  # what a supervisor (k8s, systemd) does
        fault_report.worker_restarts_after_redis += [f"{r} (exit {c})" for r, c in exited.items()]
        for photos in inputs[SESSIONS // 2 :]:
            sid = await retrying(functools.partial(client.submit, [d for d, _ in photos]), 30)
            expected.append(Expected(sid, [n for _, n in photos]))
        stuck: list[str] = []
        settle_by = time.monotonic() + scaled(60)  # in-progress keys expire timeout + 10 s after
        for exp in expected:
            try:
                left = max(1.0, settle_by - time.monotonic())
                wait = functools.partial(client.wait, exp.session_id, timeout=left, artifacts=True)
                await retrying(wait, left)
            except TimeoutError:
                workers = [*dead, *cluster.workers.values()]
                stuck.append(await describe_stuck(client, exp.session_id, workers))
        if stuck:
            stuck.append(dump_logs(tmp_path, [*dead, *cluster.workers.values()]))
        settled = time.monotonic() - killed
        objects = await bucket_objects(localstack, cluster.settings.s3_bucket)
        check = await check_sessions(client, expected, objects=objects, report=fault_report)
        letters = await client.failed()
    for exp in expected:
        fault_report.count_session(len(exp.counts))
    fault_report.notes.append(
        f"Redis kill -9 for {DOWN_S:.0f} s: workers that exited on their own: "
        f"{exited or 'none'} (last error: {sorted(set(last_words.values()))}); "
        f"all sessions settled {settled:.1f} s after the kill"
    )
    assert stuck == [], "sessions not settled after the Redis restart:\n" + "\n".join(stuck)
    assert exited == {}, f"workers exited on a {DOWN_S:.0f} s Redis restart: {last_words}"
    assert check.problems() == []
    assert [(d.function, d.error_code) for d in letters] == []


async def test_workers_ride_out_a_short_redis_restart(
    make_fault_cluster: ClusterFactory,
    private_redis: Callable[..., RedisServer],
    localstack: str,
) -> None:
    """A 2 s Redis restart (kill -9, AOF) must not take a worker down: its poll loop and
    every command ride it out through the redis-py retry policy of
    ``pipeline.runtime.connection.redis_settings`` (which must also retry refused connects), and the
    worker serves the next job without being restarted."""
    server = private_redis("blip", aof=True)
    cluster = make_fault_cluster(redis_url=server.url(0))
    await cluster.start("io")
    server.kill9()
    await asyncio.sleep(2.0)
    server.start()
    await asyncio.sleep(3.0)
    worker = cluster.workers["io"]
    alive = worker.proc.poll() is None
    last = next((line for line in reversed(worker.lines) if "Error" in line), "")[-200:]
    assert alive, f"io worker exited ({worker.proc.returncode}) on a 2 s Redis restart: {last}"
    async with PipelineClient(cluster.settings) as client:
        handle = await client.upload("after/restart.bin", b"ok", content_type="x/y")
        assert (await handle.wait(timeout=15)).state == "uploaded"
