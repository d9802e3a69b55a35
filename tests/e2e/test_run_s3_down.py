"""S3 down through a `plantpipe run`: the counts still land on local disk as soon as they are
final, the pending uploads are stated with their own exit code and kept on disk, and
`plantpipe run --resume DIR` uploads every one of them once S3 answers again.

Real worker processes, real LocalStack behind a TCP proxy that is cut (connections refused
and reset) once the workers have started, for the rest of the run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.testing.onnx_fixtures import encode_png, make_nursery_photo
from pipeline.testing.tcp_proxy import TcpProxy
from tests.conftest import REDIS_URL, S3_ENDPOINT, scaled
from tests.e2e.test_cli import PLANTPIPE, count_keys, run_env
from tests.faults.conftest import bucket_objects, s3_client

pytestmark = pytest.mark.e2e


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PLANTPIPE,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=420)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def wait_for_io_started(
    cwd: Path, run: asyncio.Task[tuple[int, str, str]], deadline_s: float = 240
) -> None:
    deadline = time.monotonic() + scaled(deadline_s)
    while time.monotonic() < deadline:
        if run.done():
            code, out, err = run.result()
            raise AssertionError(f"the run ended before its io worker started ({code}): {out}{err}")
        logs = list((cwd / "plantpipe-out" / ".logs").glob("*/io.log"))
        if logs and "io.started" in logs[0].read_text(errors="replace"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the run's io worker never started")


async def drop_bucket(bucket: str) -> None:
    async with s3_client(S3_ENDPOINT) as s3:
        keys = list(await bucket_objects(S3_ENDPOINT, bucket))
        for key in keys:
            await s3.delete_object(Bucket=bucket, Key=key)
        await s3.delete_bucket(Bucket=bucket)


async def test_s3_cut_for_the_rest_of_the_run_then_resume_uploads_everything(
    fixture_models: tuple[Path, Path], tmp_path: Path, localstack: str
) -> None:
    photos = []
    for i in range(3):
        path = tmp_path / f"bench-{i}.png"
        rgb = make_nursery_photo(640, 480, ((30, 40, 300, 440), (340, 40, 610, 440)), seed=i).rgb
        path.write_bytes(encode_png(rgb))
        photos.append(path)
    bucket = f"bk-down-{uuid.uuid4().hex[:10]}"
    proxy = TcpProxy("127.0.0.1", int(S3_ENDPOINT.rsplit(":", 1)[1]))
    endpoint = await proxy.start()
    env: dict[str, Any] = run_env(fixture_models) | {
        "PLANTPIPE_REDIS_URL": REDIS_URL,  # shared: the run's keys must all go at the end
        "PLANTPIPE_S3_ENDPOINT_URL": endpoint,
        "PLANTPIPE_S3_BUCKET": bucket,
        "PLANTPIPE_S3_CREATE_BUCKET": "1",
        "PLANTPIPE_S3_CONNECT_TIMEOUT_S": "2",
        "PLANTPIPE_RETRY_DELAYS_S": "[0.5, 1, 2]",
        "PLANTPIPE_BREAKER_RESET_S": "3",
    }
    try:
        run = asyncio.create_task(
            run_cli("run", *map(str, photos), "--upload-wait", "8", env=env, cwd=tmp_path)
        )
        await wait_for_io_started(tmp_path, run)
        await proxy.stop()  # S3 is gone for the rest of the run
        code, out, err = await run
        text = out + err
        assert code == 3, text  # counts final and on disk, uploads pending
        assert "Traceback" not in text
        sid = re.search(r"results \(local copy\): (\S+)/([0-9a-f]{32})/results.json", out)
        assert sid is not None, text
        session = tmp_path / "plantpipe-out" / sid[2]
        doc = json.loads((session / "results.json").read_text())
        assert doc["status"] == "completed" and len(doc["photos"]) == 3, doc
        assert doc["total_detected"] > 0
        assert f"--resume {session}" in text
        pending = re.findall(rf"pending: s3://{bucket}/(\S+) <- (\S+) \(", out)
        manifest = json.loads((session / "pending.json").read_text())
        keys = {u["key"] for u in manifest["uploads"]}
        assert {k for k, _ in pending} == keys, text
        assert f"{sid[2]}/results.json" in keys
        for key, local in pending:
            assert Path(local) == tmp_path / "plantpipe-out" / key
            assert Path(local).is_file()  # noqa: ASYNC240
        prefix = re.search(r"prefix (plantpipe-run-[0-9a-f]{8})", text)
        assert prefix is not None and await count_keys(prefix[1]) == 0, "keys left behind"

        # S3 still down: resume says so, keeps everything, exit 3 again
        code, out, err = await run_cli("run", "--resume", str(session), env=env, cwd=tmp_path)
        assert code == 3 and "still pending" in err, out + err
        assert (session / "pending.json").is_file()

        await proxy.start()  # S3 is back (same port)
        code, out, err = await run_cli("run", "--resume", str(session), env=env, cwd=tmp_path)
        assert code == 0, out + err
        assert "all pending uploads finished" in err
        assert not (session / "pending.json").exists()
        stored = await bucket_objects(S3_ENDPOINT, bucket)
        expected = 3 * 4 + 1  # per photo: original + 3 images; results.json
        session_keys = {k for k in stored if k.startswith(f"{sid[2]}/")}
        assert keys <= session_keys and len(session_keys) == expected, sorted(stored)
        async with s3_client(S3_ENDPOINT) as s3:
            for key in keys:
                body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
                assert body == (tmp_path / "plantpipe-out" / key).read_bytes(), key
    finally:
        await proxy.stop()
        with contextlib.suppress(Exception):  # not there when the run never started
            await drop_bucket(bucket)
