"""A real cluster for end-to-end tests: io, cpu and gpu workers as `arq` child processes,
fixture ONNX models in the YOLO layouts, real Redis and LocalStack."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.client import PipelineClient
from pipeline.settings import Settings
from pipeline.testing.onnx_fixtures import build_detect_model, build_segment_model
from tests.conftest import REDIS_URL, S3_ENDPOINT, WorkerProcess, scaled, settings_env, track


@pytest.fixture(scope="session")
def fixture_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    seg = build_segment_model(root / "seg.onnx", input_size=320, batch=1)
    det = build_detect_model(root / "det.onnx", input_size=512)
    return seg, det


@dataclass
class Cluster:
    settings: Settings
    workers: dict[str, WorkerProcess] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return settings_env(self.settings)

    async def start(self, *roles: str) -> None:
        for role in roles:
            proc = WorkerProcess(role, self.env)
            self.workers[role] = proc
        for role in roles:
            await self.workers[role].wait_for(f"{role}.started", timeout=scaled(120))

    def kill(self, role: str) -> None:
        self.workers.pop(role).kill()

    def stop_all(self) -> None:
        for proc in self.workers.values():
            proc.stop()
        self.workers.clear()

    def client(self) -> PipelineClient:
        return PipelineClient(self.settings)


def cluster_settings(models: tuple[Path, Path], **overrides: Any) -> Settings:
    prefix = f"pe{uuid.uuid4().hex[:10]}"
    seg, det = models
    values: dict[str, Any] = {
        "redis_url": REDIS_URL,
        "key_prefix": prefix,
        "storage": "s3",
        "s3_endpoint_url": S3_ENDPOINT,
        "s3_bucket": f"bk-{prefix}",
        "s3_create_bucket": True,
        "retry_delays_s": [0.2, 0.4, 0.8],
        "breaker_reset_s": 2.0,
        "poll_delay_s": 0.02,
        "seg_model_path": seg,
        "seg_input_size": 320,
        "det_model_path": det,
        "det_input_size": 512,
        "gpu_job_timeout_s": 8,
        "cpu_job_timeout_s": 20,
        "io_job_timeout_s": 20,
        "watchdog_interval_s": 1,
        "join_stale_s": 2,
        "intra_op_threads": 1,
    }
    values.update(overrides)
    return track(Settings(**values))


@pytest.fixture
def make_cluster(fixture_models: tuple[Path, Path], localstack: str) -> Iterator[Any]:
    made: list[Cluster] = []

    def factory(**overrides: Any) -> Cluster:
        cluster = Cluster(cluster_settings(fixture_models, **overrides))
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.stop_all()


@pytest.fixture
async def cleanup_redis() -> AsyncIterator[list[str]]:
    prefixes: list[str] = []
    yield prefixes
    client = Redis.from_url(REDIS_URL)
    for prefix in prefixes:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    await client.aclose()
