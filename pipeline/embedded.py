"""The embedded default behind ``plantpipe run``: a private Redis if needed, and the three
roles as child processes, all stopped when the run ends (Ctrl-C included)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from redis.asyncio import Redis

from pipeline.errors import ConfigurationError
from pipeline.health import redis_eviction_policy

ROLES = ("io", "cpu", "gpu")


async def redis_usable(url: str) -> bool:
    """True if ``url`` answers and does not evict (we never run on an evicting Redis)."""
    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        await client.ping()
        return await redis_eviction_policy(client) == "noeviction"
    except Exception:
        return False
    finally:
        await client.aclose()


@dataclass
class PrivateRedis:
    """``redis-server`` on a temporary unix socket, nothing persisted, stopped on exit."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="plantpipe-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigurationError(
                "no Redis reachable at PLANTPIPE_REDIS_URL and no `redis-server` installed to "
                "start a private one: install Redis (e.g. `apt-get install redis-server`) or "
                "point PLANTPIPE_REDIS_URL at a running server",
                code="redis_missing",
            )
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
    """``python -m arq workers.<role>.WorkerSettings`` children, logs in ``log_dir``."""

    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, roles: tuple[str, ...] = ROLES) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for role in roles:
            log = (self.log_dir / f"{role}.log").open("ab")
            self._logs.append(log)
            self.processes[role] = subprocess.Popen(
                [sys.executable, "-m", "arq", f"workers.{role}.WorkerSettings"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
            )

    def dead(self) -> dict[str, int]:
        return {r: p.returncode for r, p in self.processes.items() if p.poll() is not None}

    def stop(self, timeout: float = 20) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self._logs:
            log.close()

    def tail(self, role: str, lines: int = 20) -> str:
        path = self.log_dir / f"{role}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def child_env(overrides: dict[str, str]) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(overrides)
    repo_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
    return env
