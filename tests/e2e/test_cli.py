"""`plantpipe run` as a user runs it: private Redis, local output folder, child workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.support.onnx_fixtures import encode_png, make_nursery_photo

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


def redis_servers_on(directory_hint: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "redis-server" in line and directory_hint in line]


def test_run_three_photos_shows_progress_summary_and_outputs(
    fixture_models: tuple[Path, Path], tmp_path: Path
) -> None:
    photos = []
    for i in range(3):
        path = tmp_path / f"bench-{i}.png"
        path.write_bytes(encode_png(make_nursery_photo(960, 720, ((40, 40, 460, 680),
                                                                  (500, 40, 920, 680)),
                                                       seed=i, skip=0.3).rgb))  # fmt: skip
        photos.append(path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [PLANTPIPE, "run", *map(str, photos), "--out", str(out)],
        env=run_env(fixture_models), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "private redis-server" in text
    assert "COMPLETED" in text and "TOTAL" in text
    for name in ("bench-0.png", "bench-1.png", "bench-2.png"):
        assert name in text
    results = list(out.glob("*/results.json"))
    assert len(results) == 1
    doc = json.loads(results[0].read_text())
    assert doc["status"] == "completed"
    assert len(doc["photos"]) == 3
    session = results[0].parent
    for i in range(3):
        assert Image.open(session / str(i) / "processed.avif").format == "AVIF"
        assert (session / str(i) / "thumbnail_original.jpg").stat().st_size > 0
        assert (session / str(i) / "thumbnail_processed.jpg").stat().st_size > 0
    assert not redis_servers_on("plantpipe-")


def test_ctrl_c_stops_workers_and_private_redis(
    fixture_models: tuple[Path, Path], tmp_path: Path
) -> None:
    photo = tmp_path / "p.png"
    photo.write_bytes(encode_png(make_nursery_photo(1280, 960).rgb))
    proc = subprocess.Popen(
        [PLANTPIPE, "run", str(photo), "--out", str(tmp_path / "out")],
        env=run_env(fixture_models), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    log = tmp_path / "out" / ".logs" / "gpu.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "gpu.started" in log.read_text()):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "workers never started"
        time.sleep(0.2)
    children = subprocess.run(
        ["pgrep", "-f", "workers\\.(io|cpu|gpu)\\.WorkerSettings"], capture_output=True, text=True
    ).stdout.split()
    assert len(children) >= 3
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    time.sleep(0.5)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert alive == [], f"workers left running: {alive}"
    assert not redis_servers_on("plantpipe-")
