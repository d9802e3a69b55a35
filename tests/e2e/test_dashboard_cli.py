"""``plantpipe dashboard`` and ``plantpipe run --dashboard`` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.testing.onnx_fixtures import encode_png, make_nursery_photo
from tests.conftest import REDIS_URL
from tests.e2e.test_cli import run_env

pytestmark = pytest.mark.e2e

PLANTPIPE = str(Path(sys.executable).parent / "plantpipe")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLANTPIPE, *args], capture_output=True, text=True, timeout=120, env=env or dict(os.environ)
    )


def env_with(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTPIPE_")}
    env.update(
        {
            "PLANTPIPE_REDIS_URL": REDIS_URL,
            "PLANTPIPE_KEY_PREFIX": "pt-dash-cli",
            "PLANTPIPE_STORAGE": "/tmp/plantpipe-dashboard-cli-test",
            **values,
        }
    )
    return env


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert lines[0].startswith("error: ")
    return lines[0]


def test_help_names_the_options() -> None:
    proc = cli("dashboard", "--help", env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0
    for word in ("--host", "--port", "--prefix", "PLANTPIPE_DASHBOARD_TOKEN"):
        assert word in proc.stdout
    assert "--dashboard" in cli("run", "--help", env={**os.environ, "COLUMNS": "120"}).stdout


def test_refusals_are_one_line() -> None:
    public = cli("dashboard", "--host", "0.0.0.0", env=env_with())
    assert public.returncode == 2
    assert "refusing to serve the dashboard on 0.0.0.0 without a token" in error_line(public)
    short = cli("dashboard", env=env_with(PLANTPIPE_DASHBOARD_TOKEN="short"))
    assert short.returncode == 2 and "PLANTPIPE_DASHBOARD_TOKEN" in error_line(short)
    assert "at least 16 characters" in error_line(short)
    no_redis = cli(
        "dashboard", "--port", "0", env=env_with(PLANTPIPE_REDIS_URL="redis://127.0.0.1:1/0")
    )
    assert no_redis.returncode == 1 and "cannot reach Redis" in error_line(no_redis)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = cli("dashboard", "--port", port, env=env_with())
    assert busy.returncode == 2 and f"port {port} on 127.0.0.1 is taken" in error_line(busy)


def read_lines(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip())


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    """``plantpipe ARGS`` in the background; its stderr lines gather in the list."""
    proc = subprocess.Popen(
        [PLANTPIPE, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    threading.Thread(target=read_lines, args=(proc, lines), daemon=True).start()
    return proc, lines


def wait_for(lines: list[str], pattern: str, proc: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in lines:
            if re.search(pattern, line):
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(lines[-40:]))


def test_serves_until_sigterm_with_a_token() -> None:
    env = env_with(PLANTPIPE_DASHBOARD_TOKEN="t" * 24)
    proc, lines = start(["dashboard", "--port", "0"], env)
    try:
        line = wait_for(lines, r"^dashboard: http://127\.0\.0\.1:\d+/", proc, 60)
        assert "actions need PLANTPIPE_DASHBOARD_TOKEN" in line
        url = re.search(r"http://\S+/", line).group(0)  # type: ignore[union-attr]
        with urllib.request.urlopen(url + "api/overview", timeout=10) as resp:
            assert json.load(resp)["auth"] == "token"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0
    wait_for(lines, "dashboard stopped", proc, 5)


def test_run_with_the_dashboard_shows_the_run_and_stays_up(
    fixture_models: tuple[Path, Path], tmp_path: Path
) -> None:
    photo = tmp_path / "bench-7.png"
    photo.write_bytes(encode_png(make_nursery_photo(640, 480, ((30, 40, 300, 440),), seed=7).rgb))
    env = run_env(fixture_models)
    out = str(tmp_path / "out")
    args = ["run", str(photo), "--out", out, "--dashboard", "--dashboard-port", "0"]
    proc, lines = start(args, env)
    try:
        live = wait_for(lines, r"^live: http://127\.0\.0\.1:\d+/sessions/[0-9a-f]{32}$", proc, 180)
        url, session_id = live.split(" ", 1)[1].rsplit("sessions/", 1)
        wait_for(lines, "the dashboard stays up with the workers", proc, 180)
        with urllib.request.urlopen(f"{url}api/sessions/{session_id}", timeout=10) as resp:
            doc = json.load(resp)
        assert doc["session"]["status"] == "completed" and doc["totals"]["detected"] > 0
        assert doc["photos"][0]["name"] == "bench-7.png"
        thumb = doc["photos"][0]["files"]["thumbnail_processed"]["url"]
        with urllib.request.urlopen(url + thumb, timeout=10) as resp:  # from --out, served
            assert resp.headers["Content-Type"] == "image/jpeg" and resp.read(2) == b"\xff\xd8"
        assert proc.poll() is None  # still serving, with the workers
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    assert rc == 0, "\n".join(lines[-30:])  # the run's own exit code, not 130
    wait_for(lines, "stopped: workers", proc, 5)
