"""Shared fixtures: real Redis (dedicated db), real LocalStack S3, real arq workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.settings import Settings
from pipeline.testing import (
    in_process_worker,
    localstack_healthy,
    redis_url_for_tests,
    s3_endpoint_for_tests,
)
from pipeline.testing.kit import drop_keys, remove_bucket

__all__ = ["in_process_worker"]  # tests import it from here

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_name, _value)

# The services and the in-process worker come from the testing kit users get
# (pipeline.testing), so the project's tests and users' suites run the same code.
REDIS_URL = redis_url_for_tests()
S3_ENDPOINT = s3_endpoint_for_tests()
REPO = Path(__file__).resolve().parents[1]
ARQ_BIN = str(Path(sys.executable).parent / "arq")

SettingsFactory = Callable[..., Settings]

#: Settings whose key prefix and bucket a test made up: all removed when the session ends
#: (after every fixture's own clean-up, and after every worker process is gone), so the
#: suite leaves no bucket and no key behind even when a test failed half-way.
CREATED: list[Settings] = []
SHARED_NAMES = {"plantpipe"}  # the defaults: never a test's to remove


def busy_factor() -> float:
    """How much slower than an idle machine this one runs now: the 1-minute load average per
    core, between 1 and 4. Tests that start workers assert that nothing is lost, not how fast
    things go: their job timeouts and deadlines are multiplied by it."""
    return min(4.0, max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))


def scaled(seconds: float) -> float:
    """``seconds`` on an idle machine, stretched by :func:`busy_factor` now."""
    return seconds * busy_factor()


def track(settings: Settings) -> Settings:
    """Register ``settings``' made-up prefix and bucket for removal at the end."""
    CREATED.append(settings)
    return settings


@pytest.fixture(scope="session", autouse=True)
def remove_what_the_tests_created() -> Iterator[None]:
    yield

    async def clean() -> None:
        seen: set[tuple[str, str, str]] = set()
        for settings in CREATED:
            ident = (settings.redis_url, settings.key_prefix, settings.s3_bucket)
            if ident in seen:
                continue
            seen.add(ident)
            if settings.key_prefix not in SHARED_NAMES:
                try:
                    await drop_keys(settings)
                except Exception:  # Redis gone (a fault test's own server): nothing to drop
                    pass
            if settings.s3_bucket not in SHARED_NAMES and settings.s3_endpoint_url:
                # a fault test's endpoint (a TCP proxy in front of LocalStack, a stub) is gone
                # by now: its bucket is then removed through LocalStack itself
                endpoints = dict.fromkeys([settings.s3_endpoint_url, S3_ENDPOINT])
                for endpoint in endpoints:
                    try:
                        await remove_bucket(
                            settings.model_copy(update={"s3_endpoint_url": endpoint})
                        )
                        break
                    except Exception:  # that endpoint is gone, or never held the bucket
                        continue

    asyncio.run(clean())


@pytest.fixture(scope="session")
def localstack() -> str:
    """LocalStack S3 endpoint. Fails (never skips) when it is down: start scripts/services.sh."""
    if not localstack_healthy(S3_ENDPOINT):
        pytest.fail(
            f"LocalStack S3 is not reachable at {S3_ENDPOINT}: run `bash scripts/services.sh` "
            "(or set PLANTPIPE_TEST_S3_ENDPOINT)"
        )
    return S3_ENDPOINT


@pytest.fixture
def test_prefix() -> str:
    return f"pt{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_settings(test_prefix: str) -> SettingsFactory:
    """Settings isolated per test: own key prefix, own bucket, quick retries and breaker."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": REDIS_URL,
            "key_prefix": test_prefix,
            "storage": "s3",
            "s3_endpoint_url": S3_ENDPOINT,
            "s3_bucket": f"bk-{test_prefix}",
            "s3_create_bucket": True,
            "retry_delays_s": [0.2, 0.4, 0.8],
            "breaker_reset_s": 2.0,
            "poll_delay_s": 0.02,
            "log_json": True,
        }
        values.update(overrides)
        return track(Settings(**values))

    return factory


@pytest.fixture
async def redis(test_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        pytest.fail(f"Redis not reachable at {REDIS_URL} ({exc}): run `bash scripts/services.sh`")
    yield client
    keys = [k async for k in client.scan_iter(match=f"{test_prefix}:*", count=1000)]
    keys += [k async for k in client.scan_iter(match=f"arq:*{test_prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that reproduces ``settings`` in a child process."""
    env = dict(os.environ)
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        var = f"PLANTPIPE_{name.upper()}"
        if isinstance(value, (list, dict)):
            import json

            env[var] = json.dumps([str(v) if isinstance(v, Path) else v for v in value])
        elif isinstance(value, bool):
            env[var] = "1" if value else "0"
        elif field.default != value or var in env:
            env[var] = str(value)
    env["PYTHONPATH"] = str(REPO)
    return env


class WorkerProcess:
    """``arq workers.<role>.WorkerSettings`` as a real child process."""

    def __init__(self, role: str, env: dict[str, str]) -> None:
        self.role = role
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [ARQ_BIN, f"workers.{role}.WorkerSettings"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.role} worker exited: {self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {text!r} from {self.role} worker: {self.output()[-3000:]}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def worker_processes() -> Iterator[Callable[[str, dict[str, str]], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(role: str, env: dict[str, str]) -> WorkerProcess:
        proc = WorkerProcess(role, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
