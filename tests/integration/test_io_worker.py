"""The io role against real Redis and LocalStack: round trips, checksums, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import pickle
import random
from typing import Any

import aioboto3
import msgpack
import pytest
from botocore.config import Config
from redis.asyncio import Redis

from pipeline.client import PipelineClient, UploadHandle
from pipeline.errors import ConfigurationError, UploadFailed
from pipeline.settings import Settings
from tests.conftest import SettingsFactory, in_process_worker, settings_env
from workers import io as io_worker

pytestmark = pytest.mark.integration


def s3_client(endpoint: str) -> Any:
    return aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


async def test_subprocess_worker_uploads_hundreds_with_identical_bytes(
    localstack: str, make_settings: SettingsFactory, redis: Redis, worker_processes: Any
) -> None:
    settings = make_settings()
    worker = worker_processes("io", settings_env(settings))
    await worker.wait_for("io.started")

    rng = random.Random(7)
    objects: dict[str, tuple[bytes, str]] = {}
    for i in range(300):
        size = rng.choice([0, 1, 1024, 65_536, 300_000])
        ctype = rng.choice(["image/jpeg", "image/avif", "application/json"])
        objects[f"t/{i:04d}.bin"] = (rng.randbytes(size), ctype)
    objects["t/big.bin"] = (rng.randbytes(10 * 1024 * 1024 + 123), "application/octet-stream")

    async with PipelineClient(settings) as client:
        handles = await asyncio.gather(
            *(
                client.upload(k, d, content_type=c, metadata={"n": k})
                for k, (d, c) in objects.items()
            )
        )
        records = await asyncio.gather(*(h.wait(timeout=120) for h in handles))
    assert {r.state for r in records} == {"uploaded"}

    async with s3_client(localstack) as s3:

        async def check(key: str) -> None:
            data, ctype = objects[key]
            resp = await s3.get_object(Bucket=settings.s3_bucket, Key=key)
            body = await resp["Body"].read()
            assert body == data, key
            assert resp["ContentType"] == ctype
            assert resp["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
            assert resp["Metadata"]["n"] == key
            if key != "t/big.bin":
                assert resp["ETag"].strip('"') == hashlib.md5(data).hexdigest()

        await asyncio.gather(*(check(k) for k in objects))
    # every blob was released once its upload landed
    assert [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:blob:*")] == []


async def test_permanent_error_dead_letters_with_code_and_replays(
    localstack: str, make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    async with in_process_worker(io_worker.worker_options(settings), settings):
        async with s3_client(localstack) as s3:
            await s3.delete_bucket(Bucket=settings.s3_bucket)  # the cause
        async with PipelineClient(settings) as client:
            handle = await client.upload("a/b.txt", b"hello", content_type="text/plain")
            with pytest.raises(UploadFailed) as failure:
                await handle.wait(timeout=10)
            assert failure.value.code == "NoSuchBucket"
            letters = await client.failed()
            assert len(letters) == 1
            assert letters[0].error_code == "NoSuchBucket"
            assert letters[0].attempts == 1  # permanent: no retry
            assert "NoSuchBucket" in letters[0].reason

            async with s3_client(localstack) as s3:
                await s3.create_bucket(Bucket=settings.s3_bucket)  # the fix
            replayed = await client.retry_failed()
            assert len(replayed) == 1
            record = await handle.wait(timeout=10)
            assert record.state == "uploaded"
            assert await client.failed() == []
        async with s3_client(localstack) as s3:
            resp = await s3.get_object(Bucket=settings.s3_bucket, Key="a/b.txt")
            assert await resp["Body"].read() == b"hello"


async def test_jobs_in_redis_are_msgpack_not_pickle(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings()
    async with PipelineClient(settings) as client:
        handle = await client.upload("x/y.bin", b"\x00" * 10, content_type="application/x")
    raw = await redis.get(f"arq:job:upload:{handle.artifact_id}")
    assert raw is not None
    assert not raw.startswith(b"\x80")  # a pickle protocol 2+ header
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(raw)
    job = msgpack.unpackb(raw, raw=False)
    assert job["f"] == "upload"
    assert job["k"]["payload"]["key"] == "x/y.bin"
    assert job["k"]["payload"]["blob"]["size"] == 10
    await redis.delete(f"arq:job:upload:{handle.artifact_id}")


async def test_worker_refuses_an_evicting_redis(
    make_settings: SettingsFactory, tmp_path: Any, worker_processes: Any
) -> None:
    import socket
    import subprocess

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--maxmemory-policy",
            "allkeys-lru",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        probe = Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            try:
                await probe.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)
        await probe.aclose()
        settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0")
        with pytest.raises(ConfigurationError, match="noeviction"):
            async with in_process_worker(io_worker.worker_options(settings), settings):
                pass
        proc = worker_processes("io", settings_env(settings))
        assert proc.proc.wait(60) != 0
        assert "noeviction" in proc.output()
    finally:
        server.kill()
        server.wait()


def test_settings_defaults_match_the_design() -> None:
    s = Settings()
    assert s.io_concurrency == 50
    assert s.retry_delays_s == [2.0, 4.0, 8.0]
    assert (s.breaker_fail_max, s.breaker_reset_s) == (5, 60.0)
    assert s.max_upload_bytes == 20 * 1024 * 1024


@pytest.mark.parametrize("stored", ["same bytes", "other bytes"])
async def test_an_upload_out_of_tries_whose_object_is_stored_is_uploaded(
    localstack: str, make_settings: SettingsFactory, redis: Redis, stored: str
) -> None:
    """Regression (the Redis kill -9 fault test, intermittently): a try stored the object,
    then its record was lost (Redis restarted from an AOF a second behind, or the worker died
    between the PUT and the record); the re-runs counted up to arq's last allowed try, where
    the upload gave up as a crash loop — artifact ``failed``, dead letter — although the
    object sat in S3. Before giving up an upload now asks the store: the same bytes there
    (size and SHA-256) mean uploaded, no dead letter; other bytes still give up."""
    from pipeline.runtime.retry import arq_max_tries
    from pipeline.runtime.uploads import Output, upload_job_id

    settings = make_settings()
    data = b"the photo's thumbnail" * 50
    async with PipelineClient(settings) as client:
        [job] = await client._stage([Output("lost-record", "lost/record.jpg", "image/jpeg", data)])
        async with s3_client(localstack) as s3:  # what the earlier, unrecorded try stored
            body = data if stored == "same bytes" else data[::-1]
            with contextlib.suppress(Exception):  # the worker creates it on start, later
                await s3.create_bucket(Bucket=settings.s3_bucket)
            await s3.put_object(
                Bucket=settings.s3_bucket,
                Key=job.key,
                Body=body,
                Metadata={"sha256": hashlib.sha256(body).hexdigest()},
            )
        await client.redis.enqueue_job(
            "upload",
            payload=job.model_dump(mode="json"),
            _job_id=upload_job_id(job.artifact_id),
            _queue_name=client.queues.io,
            _job_try=arq_max_tries(settings),  # as arq starts the last try it allows
        )
        async with in_process_worker(io_worker.worker_options(settings), settings):
            handle = UploadHandle(client, job.artifact_id, job.key)
            if stored == "same bytes":
                assert (await handle.wait(timeout=15)).state == "uploaded"
                assert await client.failed() == []
            else:
                with pytest.raises(UploadFailed) as failure:
                    await handle.wait(timeout=15)
                assert failure.value.code == "crash_loop"
                assert [d.error_code for d in await client.failed()] == ["crash_loop"]
