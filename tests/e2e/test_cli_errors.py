"""Every expected CLI failure, as a user meets it: a subprocess, the documented exit code,
exactly one ``error:`` line on stderr that says what to do, and never a traceback."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from pipeline.client import PipelineClient
from pipeline.embedded import drop_prefix
from pipeline.runtime.deadletter import DeadLetters
from pipeline.schemas import DeadLetter
from pipeline.settings import Settings
from tests.conftest import REDIS_URL
from tests.unit.test_intake import declaring, png_declaring

pytestmark = pytest.mark.e2e

PLANTPIPE = str(Path(sys.executable).parent / "plantpipe")
DOWN = "redis://127.0.0.1:6399/5"  # nothing listens there


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = dict(os.environ)
    for name in (
        "PLANTPIPE_STORAGE",
        "PLANTPIPE_S3_BUCKET",
        "PLANTPIPE_S3_ENDPOINT_URL",
        "PLANTPIPE_KEY_PREFIX",
        "COLUMNS",
    ):
        base.pop(name, None)
    base.update(env or {})
    return subprocess.run(
        [PLANTPIPE, *args], env=base, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def one_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Assert the exit code and one ``error:`` line (containing ``needles``); return it."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text
    assert "Traceback" not in text, text
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle in errors[0], text
    return errors[0]


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "text": tmp_path / "notimage.jpg",
        "empty": tmp_path / "empty.jpg",
        "png_as_jpg": tmp_path / "really-a-png.jpg",
        "directory": tmp_path / "a-folder",
        "missing": tmp_path / "missing.jpg",
        "truncated": tmp_path / "truncated.jpg",
        "png_60000": tmp_path / "huge.png",
        "jpeg_12000x9000": tmp_path / "108mp.jpg",
    }
    files["text"].write_text("hello, I am not a photo\n")
    files["empty"].write_bytes(b"")
    Image.new("RGB", (32, 32), (10, 200, 10)).save(files["png_as_jpg"], format="PNG")
    files["directory"].mkdir()
    buf = io.BytesIO()
    Image.effect_noise((320, 240), 60).convert("RGB").save(buf, format="JPEG", quality=90)
    good_jpeg = buf.getvalue()
    files["truncated"].write_bytes(good_jpeg[: len(good_jpeg) // 2])
    files["png_60000"].write_bytes(png_declaring(60_000, 60_000))
    files["jpeg_12000x9000"].write_bytes(declaring(good_jpeg, 12_000, 9_000))
    return files


EXPECTED = {
    "text": "the content is text",
    "empty": "empty",
    "png_as_jpg": "does not match",
    "directory": "is a directory",
    "missing": "no such file",
    "truncated": "truncated",
    "png_60000": "3600000000 pixels",
    "jpeg_12000x9000": "12000×9000 = 108000000 pixels, more than the 100000000 allowed",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_run_refuses_bad_input_before_any_worker_starts(
    bad_files: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "out"
    proc = cli("run", str(bad_files[kind]), "--out", str(out), env={"PLANTPIPE_REDIS_URL": DOWN})
    one_error(proc, 2, bad_files[kind].name, EXPECTED[kind])
    assert not out.exists(), "nothing may start (no logs folder) for bad input"
    assert "worker" not in proc.stderr


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_submit_refuses_bad_input(bad_files: dict[str, Path], kind: str) -> None:
    proc = cli("submit", str(bad_files[kind]), env={"PLANTPIPE_REDIS_URL": DOWN})
    one_error(proc, 2, EXPECTED[kind])


@pytest.mark.parametrize(
    "args",
    [
        ("status", "abc"),
        ("watch", "abc", "--timeout", "5"),
        ("failed", "list"),
        ("failed", "retry", "x"),
        ("workers", "--list"),
        ("submit", "PHOTO"),
    ],
)
def test_redis_unreachable_is_one_line(args: tuple[str, ...], tmp_path: Path) -> None:
    photo = tmp_path / "ok.png"
    Image.new("RGB", (64, 48), (90, 140, 60)).save(photo)
    argv = [str(photo) if a == "PHOTO" else a for a in args]
    proc = cli(*argv, env={"PLANTPIPE_REDIS_URL": DOWN})
    one_error(proc, 1, "cannot reach Redis at redis://127.0.0.1:6399/5", "PLANTPIPE_REDIS_URL")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "--bogus"), "No such option"),
        (("status",), "Missing argument"),
        (("evaluate", "--scenes", "0"), "--scenes"),
        (("workers", "--roles", "io,nope"), "unknown roles"),
        (("submit", "PHOTO", "--meta", "novalue"), "expected key=value"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], needle: str, tmp_path: Path) -> None:
    photo = tmp_path / "ok.png"
    Image.new("RGB", (64, 48), (90, 140, 60)).save(photo)
    argv = [str(photo) if a == "PHOTO" else a for a in args]
    one_error(cli(*argv, env={"PLANTPIPE_REDIS_URL": DOWN}), 2, needle)


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("PLANTPIPE_DET_CONF", "-1", "PLANTPIPE_DET_CONF='-1' is not allowed: it must be a number"),
        ("PLANTPIPE_GPU_JOB_TIMEOUT_S", "-5", "PLANTPIPE_GPU_JOB_TIMEOUT_S='-5'"),
        ("PLANTPIPE_MAX_UPLOAD_BYTES", "-1", "PLANTPIPE_MAX_UPLOAD_BYTES='-1'"),
        ("PLANTPIPE_IO_CONCURRENCY", "fifty", "PLANTPIPE_IO_CONCURRENCY='fifty'"),
        ("PLANTPIPE_RETRY_DELAYS_S", "2,4,8", "PLANTPIPE_RETRY_DELAYS_S='2,4,8' is not valid JSON"),
    ],
)
def test_a_setting_out_of_range_is_one_line_before_anything_starts(
    variable: str, value: str, needle: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = cli("run", "--out", str(out), env={"PLANTPIPE_REDIS_URL": DOWN, variable: value})
    one_error(proc, 2, needle)
    assert not out.exists()


def test_a_negative_timeout_is_a_usage_error() -> None:
    one_error(cli("run", "--timeout", "-5", env={"PLANTPIPE_REDIS_URL": DOWN}), 2, "--timeout")


def test_debug_shows_the_traceback() -> None:
    proc = cli("--debug", "status", "abc", env={"PLANTPIPE_REDIS_URL": DOWN})
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot reach Redis")


# --- against the real Redis, on a prefix of its own ------------------------------------


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"pcli{uuid.uuid4().hex[:10]}"
    yield name
    await drop_prefix(REDIS_URL, name)


def env_for(prefix: str) -> dict[str, str]:
    return {"PLANTPIPE_REDIS_URL": REDIS_URL, "PLANTPIPE_KEY_PREFIX": prefix}


def test_unknown_session_id(prefix: str) -> None:
    one_error(cli("status", "no-such-id", env=env_for(prefix)), 2, "no session 'no-such-id'")
    one_error(cli("watch", "no-such-id", env=env_for(prefix)), 2, "no session 'no-such-id'")


async def test_watch_timeout_and_submit_without_workers(prefix: str, tmp_path: Path) -> None:
    photo = tmp_path / "ok.png"
    Image.new("RGB", (64, 48), (90, 140, 60)).save(photo)
    submitted = await asyncio.to_thread(cli, "submit", str(photo), env=env_for(prefix))
    assert submitted.returncode == 0, submitted.stderr
    assert "warning: no live io, gpu, cpu worker" in submitted.stderr
    session_id = submitted.stdout.strip().splitlines()[-1]
    shown = await asyncio.to_thread(cli, "status", session_id, env=env_for(prefix))
    assert shown.returncode == 0 and "ok.png" in shown.stdout, shown.stdout  # not blank
    watched = await asyncio.to_thread(
        cli, "watch", session_id, "--timeout", "2", env=env_for(prefix)
    )
    line = one_error(watched, 1, f"session {session_id} not finished within 2 s", "pending")
    assert "Redis" not in line
    waited = await asyncio.to_thread(
        cli, "submit", str(photo), "--wait", "--timeout", "2", env=env_for(prefix)
    )
    one_error(waited, 1, "not terminal within 2 s", "plantpipe watch")


async def test_a_session_half_lost_by_a_redis_restart_is_said_plainly(prefix: str) -> None:
    """Redis restarted empty under a running session; a worker then wrote a few fields into
    an empty hash. `status` says the data was lost (not `error: photo_count`)."""
    from pipeline.state.keys import Keys

    settings = Settings(redis_url=REDIS_URL, key_prefix=prefix)
    sid = uuid.uuid4().hex
    async with PipelineClient(settings) as client:
        await client.redis.hset(
            Keys.from_settings(settings).session(sid),
            mapping={"art:abc": "uploaded", "updated_at": "x"},
        )
    shown = await asyncio.to_thread(cli, "status", sid, env=env_for(prefix))
    one_error(shown, 1, f"session {sid}'s record has lost", "Redis lost its data")


async def test_failed_list_whole_ids_and_retry_says_why(prefix: str) -> None:
    settings = Settings(redis_url=REDIS_URL, key_prefix=prefix)
    sid = uuid.uuid4().hex
    long_id = f"render:{sid}:0:{'x' * 60}"
    async with PipelineClient(settings) as client:
        letters = DeadLetters(client.redis, settings)
        await letters.add(
            DeadLetter(
                id=long_id,
                function="render_photo",
                queue=f"{prefix}:queue:cpu",
                job_id=f"render:{sid}:0",
                kwargs={"payload": {}},
                error_code="timeout",
                reason="render_photo ran past its budget\nsecond line",
                attempts=4,
                session_id=sid,
                replayable=False,
            )
        )
    listed = await asyncio.to_thread(cli, "failed", "list", env=env_for(prefix))
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert rows == [
        [
            long_id,
            "render_photo",
            "timeout",
            "4",
            "not-replayable",
            "render_photo ran past its budget; second line",
        ]
    ]
    as_json = await asyncio.to_thread(cli, "failed", "list", "--json", env=env_for(prefix))
    assert [d["id"] for d in json.loads(as_json.stdout)] == [long_id]
    retried = await asyncio.to_thread(cli, "failed", "retry", long_id, env=env_for(prefix))
    one_error(retried, 1, "cannot be replayed", "resubmit the photo")
    unknown = await asyncio.to_thread(cli, "failed", "retry", "nope", env=env_for(prefix))
    one_error(unknown, 2, "no dead letter 'nope'")
    # Another prefix's dead letters are reachable with --prefix.
    other = await asyncio.to_thread(
        cli, "failed", "list", "--prefix", prefix,
        env={"PLANTPIPE_REDIS_URL": REDIS_URL, "PLANTPIPE_KEY_PREFIX": "elsewhere"},
    )  # fmt: skip
    assert other.stdout.startswith(long_id + "\t"), other.stdout + other.stderr


def test_worker_start_failure_shows_the_cause(prefix: str, tmp_path: Path) -> None:
    env = env_for(prefix) | {
        "PLANTPIPE_S3_ENDPOINT_URL": "http://127.0.0.1:4566",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    base = dict(os.environ)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        base.pop(name, None)
    base.update(env)
    proc = subprocess.run(
        [PLANTPIPE, "workers", "--roles", "io"],
        env=base,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_error(proc, 1, "io worker exited", "NoCredentialsError", "AWS_ACCESS_KEY_ID", "io.log")


def test_run_to_s3_says_so_first_and_shows_a_worker_start_failure(
    prefix: str, tmp_path: Path
) -> None:
    """Without --out, S3 settings in the environment decide (said on the first line); the io
    worker that cannot start (no AWS credentials) is one error line with its cause."""
    photo = tmp_path / "ok.png"
    Image.new("RGB", (64, 48), (90, 140, 60)).save(photo)
    base = dict(os.environ)
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "PLANTPIPE_STORAGE",
        "PLANTPIPE_KEY_PREFIX",
    ):
        base.pop(name, None)
    base.update(
        {
            "PLANTPIPE_REDIS_URL": REDIS_URL,
            "PLANTPIPE_S3_ENDPOINT_URL": "http://127.0.0.1:4566",
            "PLANTPIPE_S3_BUCKET": f"bk-{prefix}",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    proc = subprocess.run(
        [PLANTPIPE, "run", str(photo)],
        env=base,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"outputs: s3://bk-{prefix}/ (PLANTPIPE_S3_BUCKET"), proc.stderr
    assert "pass --out DIR for a local folder" in first
    one_error(proc, 1, "io worker exited at start", "NoCredentialsError", "io.log")
    # nothing written locally but the run's logs (no session folder, no results)
    assert [p.name for p in (tmp_path / "plantpipe-out").iterdir()] == [".logs"]


def test_out_problems_are_reported_as_such_not_as_redis(tmp_path: Path) -> None:
    """A --out that is a file, or that cannot be created or written, is named as the problem
    (before any Redis or worker is touched)."""
    photo = tmp_path / "ok.png"
    Image.new("RGB", (64, 48), (90, 140, 60)).save(photo)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    line = one_error(cli("run", str(photo), "--out", str(a_file)), 2, "--out", "is a file")
    assert "Redis" not in line
    for unwritable in (Path("/sys/plantpipe-out-test"), Path("/proc/plantpipe-out-test/x")):
        line = one_error(cli("run", str(photo), "--out", str(unwritable)), 2, "cannot write there")
        assert str(unwritable) in line and "Redis" not in line
