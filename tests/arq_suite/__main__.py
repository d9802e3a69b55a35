"""``python -m tests.arq_suite [pytest args...]``: arq's own tests against ResilientWorker.

See the package docstring. Needs a ``redis-server`` (see ``tests.redis_server``) and PyPI (the
arq sdist and arq's test dependencies); it touches no other Redis. Exit status: pytest's (5,
no tests, is 1).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import arq
from packaging.version import Version

from pipeline.embedded import redis_server_binary
from tests.redis_server import RedisServer

HERE = Path(__file__).resolve().parent
PORT_ENV = "PLANTPIPE_ARQ_SUITE_REDIS_PORT"
CONFIG_FILES = ("pyproject.toml", "setup.cfg", "pytest.ini", "tox.ini")

#: arq's test dependencies not installed: coverage and pytest-pretty (reporting only),
#: testcontainers (Redis in Docker; the plugin stands in for it with the private server), and
#: what the project itself pins (msgpack, pydantic: the versions plantpipe runs with).
SKIPPED = {"coverage", "pytest-pretty", "testcontainers", "msgpack", "pydantic"}
#: Needed beyond arq's testing group: arq's ``watch`` extra (``arq --watch``; test_cli uses it).
EXTRA = ("watchfiles",)


#: arq's cron tests (tests/test_cron.py) schedule ``cron(foobar, hour=1, ...)`` in the machine's
#: local time and count the runs: from 01:00 to 01:59 local time the job also fires on the
#: minute, and ``test_job_successful`` sees 2 runs where it wants 1. The suite runs under a
#: fixed-offset ``TZ`` whose hour is not 1 for the next ``SUITE_WINDOW_S``.
CRON_TEST_HOUR = 1
SUITE_WINDOW_S = 15 * 60


def suite_timezone(now_utc: datetime) -> str:
    """A POSIX ``TZ`` (UTC or a whole-hour offset) in which arq's cron test hour does not
    fall between ``now_utc`` and ``SUITE_WINDOW_S`` later."""
    end = now_utc + timedelta(seconds=SUITE_WINDOW_S)
    for offset in (0, 6, 12):
        hours = {(t.hour + offset) % 24 for t in (now_utc, end)}
        if CRON_TEST_HOUR not in hours:
            # POSIX: a name of 3+ letters, then the offset west of UTC ("TST-6": UTC+6)
            return "UTC0" if offset == 0 else f"TST-{offset}"
    raise AssertionError("unreachable: a 15-minute window spans at most two hours")


def say(message: str) -> None:
    print(f"arq suite: {message}", flush=True)


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def unpack_sdist(version: str, work: Path) -> Path:
    """Download arq's sdist and unpack it; returns its top folder."""
    download = work / "download"
    pip("download", "--no-deps", "--no-binary", ":all:", f"arq=={version}", "-d", str(download))
    archives = sorted(download.glob("arq-*.tar.gz"))
    if len(archives) != 1:
        raise SystemExit(f"arq suite: expected one arq sdist, got {archives}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(work / "sdist", filter="data")
    (top,) = (work / "sdist").iterdir()
    return top


def arq_test_requirements(sdist: Path) -> list[str]:
    """arq's testing dependencies at the versions its own lock file (``uv.lock``; before that,
    ``requirements/testing.txt``) pins, less :data:`SKIPPED`, plus :data:`EXTRA`."""
    lock_file = sdist / "uv.lock"
    if lock_file.exists():
        lock = tomllib.loads(lock_file.read_text())
        versions: dict[str, list[str]] = {}
        for package in lock["package"]:
            if "version" in package:  # arq itself (the project, editable) has none
                versions.setdefault(package["name"], []).append(package["version"])
        (arq_entry,) = [p for p in lock["package"] if p["name"] == "arq"]
        groups = arq_entry.get("dev-dependencies") or arq_entry.get("dependency-groups") or {}
        names = {dep["name"] for dep in groups.get("testing", [])} | set(EXTRA)

        def newest(name: str) -> str:  # one entry per Python range: ours is the newest
            return max(versions[name], key=Version)

        return sorted(f"{n}=={newest(n)}" if n in versions else n for n in names - SKIPPED)
    legacy = sdist / "requirements" / "testing.txt"
    if legacy.exists():
        lines = [line.split("#")[0].strip() for line in legacy.read_text().splitlines()]
        wanted = [line for line in lines if line and not line.startswith("-")]
        names = {line.split("=")[0].split("[")[0].strip().lower() for line in wanted}
        return [
            line for line in wanted if line.split("=")[0].split("[")[0].strip() not in SKIPPED
        ] + [extra for extra in EXTRA if extra not in names]
    raise SystemExit(f"arq suite: arq's sdist has neither uv.lock nor requirements/: {sdist}")


def run(pytest_args: list[str]) -> int:
    version = arq.VERSION
    work = Path(tempfile.mkdtemp(prefix="plantpipe-arq-suite-"))
    redis_server = RedisServer(work / "redis")  # no persistence, noeviction
    try:
        say(f"arq {version}: downloading its sdist")
        sdist = unpack_sdist(version, work)
        suite = work / "suite"  # its tests and pytest configuration, not its arq package
        shutil.copytree(sdist / "tests", suite / "tests")
        for name in CONFIG_FILES:
            if (sdist / name).exists():
                shutil.copy2(sdist / name, suite / name)
        requirements = arq_test_requirements(sdist)
        say(f"installing its test dependencies: {' '.join(requirements)}")
        deps = work / "deps"
        pip("install", "--no-warn-script-location", "--target", str(deps), *requirements)
        if redis_server_binary() is None:
            raise SystemExit("arq suite: no redis-server (apt-get install redis-server)")
        redis_server.start()
        say(f"private redis-server on 127.0.0.1:{redis_server.port}")
        env = {
            **os.environ,
            PORT_ENV: str(redis_server.port),
            # arq's pinned test tools first; this plugin; then .venv (arq, redis, plantpipe)
            "PYTHONPATH": os.pathsep.join([str(deps), str(HERE)]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "TZ": suite_timezone(datetime.now(UTC)),
        }
        command = [
            sys.executable, "-m", "pytest", "--rootdir", str(suite),
            "-p", "no:cacheprovider", "-p", "no:plantpipe", "-p", "plantpipe_arq_plugin",
            "-rxXfE", *pytest_args,
        ]  # fmt: skip
        rc = subprocess.run(command, cwd=suite, env=env).returncode
        return 1 if rc == 5 else rc
    finally:
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _terminate(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through run()'s finally: Redis stopped


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
