"""What every benchmark section shares: :class:`Harness` (Redis, the S3 stub process, child
processes, the Celery baseline's venv, cleanup), :class:`Proc` (a child process with its log
and CPU time), and the environment and settings of a plantpipe worker bound to a key prefix.

Sections import this module, :mod:`bench.cluster` (the worker clusters they start),
:mod:`bench.common` (statistics and machine description) and :mod:`pipeline`; never each other
or the entry point (:mod:`bench.__main__`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import aiohttp
from redis.asyncio import Redis

from pipeline.settings import Settings

REPO: Final = Path(__file__).resolve().parents[1]
BENCH_DIR: Final = REPO / "bench"
CELERY_DIR: Final = BENCH_DIR / "celery_baseline"
CELERY_VENV: Final = CELERY_DIR / ".venv"
REDIS_URL: Final = os.environ.get("PLANTPIPE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CELERY_REDIS_URL: Final = os.environ.get(
    "PLANTPIPE_BENCH_CELERY_REDIS_URL", "redis://127.0.0.1:6379/13"
)
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

#: What a section hands back: its markdown body and the headline lines for the summary.
SectionOutput = tuple[str, list[str]]


# --------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(p) for p in fh.read().split())
    return found


def _own_cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of ``pid`` (children it has waited for included)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return 0
    fields = raw.rsplit(")", 1)[1].split()
    # after "pid (comm)": state=0 ... utime=11 stime=12 cutime=13 cstime=14
    return sum(int(v) for v in fields[11:15])


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + sys) of ``pid`` and every live descendant, from /proc."""
    ticks, stack, seen = 0, [pid], set[int]()
    while stack and len(seen) < 10_000:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        ticks += _own_cpu_ticks(current)
        stack.extend(_children(current))
    return ticks / CLK_TCK


class Proc:
    """A child process of the benchmark with its output in ``log_dir/<name>.log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops us in order
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}\n"
                f"(log: {self.log_path})"
            )

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


async def run_command(
    argv: Sequence[str], env: Mapping[str, str], timeout: float
) -> tuple[int, str, str]:
    """Run a short command to completion (bounded); returns (rc, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TimeoutError(f"{shlex.join(argv)} ran over {timeout:.0f} s") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


# --------------------------------------------------------------------------- the harness


class Harness:
    """What every section shares: the S3 stub process, Redis, child processes, cleanup."""

    def __init__(self, *, quick: bool, log_dir: Path) -> None:
        self.quick = quick
        self.log_dir = log_dir
        self.run_id = uuid.uuid4().hex[:8]
        self.redis_url = REDIS_URL
        self.celery_redis_url = CELERY_REDIS_URL
        self.redis: Redis = Redis.from_url(REDIS_URL)
        self.stub_url = ""
        self._stub: Proc | None = None
        self._procs: list[Proc] = []
        self._prefixes: list[str] = []
        self._tokens: set[str] = set()
        self._celery_keys_before: set[bytes] = set()
        self._celery_python: Path | None = None
        self._celery_problem: str | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        try:
            await self.redis.ping()
        except Exception as exc:
            raise SystemExit(f"bench: Redis not reachable at {REDIS_URL}: {exc}") from exc
        reply = await self.redis.config_get("maxmemory-policy")
        policy = {str(k): v for k, v in reply.items()}.get("maxmemory-policy")
        if policy not in (b"noeviction", "noeviction"):
            raise SystemExit(f"bench: Redis evicts ({policy!r}); plantpipe refuses that")
        celery_db = Redis.from_url(self.celery_redis_url)
        try:
            self._celery_keys_before = {k async for k in celery_db.scan_iter(count=1000)}
        finally:
            await celery_db.aclose()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self._start_stub()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        if self._stub is not None:
            self._stub.stop()
        if self._http is not None:
            await self._http.close()
        await self.cleanup_redis()
        await self.redis.aclose()

    # ---- names and environments

    def prefix(self, tag: str) -> str:
        """A fresh key prefix (also used as bucket name); every key under it is removed at
        the end of the run."""
        prefix = f"bench-{self.run_id}-{tag}"
        self._prefixes.append(prefix)
        return prefix

    def track(self, *ids: str) -> None:
        """Ids (session, artifact, job) whose ``arq:*`` keys must be removed at the end."""
        self._tokens.update(ids)

    def env(self, prefix: str, **extra: str) -> dict[str, str]:
        """Environment of a plantpipe worker process bound to ``prefix``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTPIPE_")}
        env.update(
            {
                "PLANTPIPE_REDIS_URL": self.redis_url,
                "PLANTPIPE_KEY_PREFIX": prefix,
                "PLANTPIPE_STORAGE": "s3",
                "PLANTPIPE_S3_ENDPOINT_URL": self.stub_url,
                "PLANTPIPE_S3_BUCKET": prefix,
                "PLANTPIPE_S3_CREATE_BUCKET": "1",
                "PLANTPIPE_LOG_LEVEL": "WARNING",
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1",
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    # ---- processes

    def spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], *, stdout_pipe: bool = False
    ) -> Proc:
        proc = Proc(
            f"{len(self._procs):02d}-{name}", argv, env, self.log_dir, stdout_pipe=stdout_pipe
        )
        self._procs.append(proc)
        return proc

    def arq_worker(self, name: str, settings_path: str, env: Mapping[str, str]) -> Proc:
        """``python -m arq <settings_path>`` (``workers.io.WorkerSettings`` …)."""
        return self.spawn(name, [sys.executable, "-m", "arq", settings_path], env)

    async def command(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> tuple[int, str, str]:
        """Run a short command to completion (bounded); returns (rc, stdout, stderr)."""
        return await run_command(argv, env, timeout)

    def stop(self, *procs: Proc) -> None:
        for proc in procs:
            proc.stop()

    async def wait_for_heartbeat(
        self, prefix: str, role: str, proc: Proc, timeout: float = 60.0
    ) -> None:
        """Wait until a worker of ``role`` under ``prefix`` has written its heartbeat key
        (workers log at WARNING, so there is no "started" line to wait for)."""
        pattern = f"{prefix}:worker:{role}:*"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.check()
            async for _key in self.redis.scan_iter(match=pattern, count=1000):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{proc.name}: no heartbeat in {timeout:.0f} s:\n{proc.tail()}")

    async def wait_until(
        self,
        probe: Callable[[], Awaitable[bool]],
        what: str,
        timeout: float,
        procs: Sequence[Proc] = (),
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in procs:
                proc.check()
            if await probe():
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{what}: not within {timeout:.0f} s")

    async def redis_cpu_seconds(self) -> float:
        """CPU seconds (user + sys) of the Redis server so far (``INFO cpu``; the server is
        shared, so other clients' work counts too)."""
        info = await self.redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    # ---- the S3 stub (one process for the whole run; latency set per section)

    async def _start_stub(self) -> None:
        proc = self.spawn(
            "s3-stub",
            [sys.executable, "-m", "pipeline.testing.s3stub", "--port", "0", "--latency-ms", "0"],
            self.env("stub"),
            stdout_pipe=True,
        )
        assert proc.popen.stdout is not None
        stdout = proc.popen.stdout
        try:
            line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), 30)
        except TimeoutError:
            raise RuntimeError(f"S3 stub did not start:\n{proc.tail()}") from None
        text = line.decode().strip()
        if not text.startswith("ready "):
            raise RuntimeError(f"S3 stub said {text!r}:\n{proc.tail()}")
        self.stub_url = text.split(" ", 1)[1]
        self._stub = proc
        self._procs.remove(proc)  # stopped last, after the workers that talk to it

        def drain() -> None:  # the stub prints nothing more; never let a full pipe block it
            with contextlib.suppress(ValueError, OSError):
                for _ in iter(stdout.readline, b""):
                    pass

        threading.Thread(target=drain, daemon=True).start()

    @property
    def stub(self) -> Proc:
        if self._stub is None:
            raise RuntimeError("no S3 stub")
        return self._stub

    async def _stub_call(self, method: str, path: str) -> dict[str, object]:
        assert self._http is not None
        async with self._http.request(method, f"{self.stub_url}/_stub{path}") as resp:
            resp.raise_for_status()
            data: dict[str, object] = await resp.json()
            return data

    async def stub_latency(self, ms: float) -> None:
        await self._stub_call("POST", f"/latency?ms={ms}")

    async def stub_stats(self) -> dict[str, object]:
        return await self._stub_call("GET", "/stats")

    async def stub_reset(self, *, store: bool = False) -> None:
        """Zero the stub's counters; ``store``: also drop every bucket and object (only when
        no worker that created a bucket still runs)."""
        await self._stub_call("POST", "/reset?store=1" if store else "/reset")

    # ---- the Celery baseline's venv

    async def celery_python(self) -> Path | None:
        """The Celery venv's python (created on first use), or None; see celery_problem."""
        if self._celery_python is not None or self._celery_problem is not None:
            return self._celery_python
        python = CELERY_VENV / "bin" / "python"
        if not python.exists():
            print("bench: creating the Celery venv (bench/celery_baseline/.venv)…", flush=True)
            try:
                rc, _out, err = await run_command(
                    ["python3", "-m", "venv", str(CELERY_VENV)], os.environ, 120
                )
                if rc == 0:
                    rc, _out, err = await run_command(
                        [str(python), "-m", "pip", "install", "-q", "-r",
                         str(CELERY_DIR / "requirements.txt")],
                        os.environ,
                        600,
                    )  # fmt: skip
            except (OSError, TimeoutError) as exc:
                rc, err = 1, str(exc)
            if rc != 0:
                self._celery_problem = f"could not create the Celery venv: {err.strip()[-500:]}"
                return None
        self._celery_python = python
        return python

    @property
    def celery_problem(self) -> str | None:
        return self._celery_problem

    def celery_env(self, queue: str, **extra: str) -> dict[str, str]:
        env = self.env(queue)
        env.update(
            {
                "CELERY_BENCH_BROKER": self.celery_redis_url,
                "CELERY_BENCH_QUEUE": queue,
                "CELERY_BENCH_S3_ENDPOINT": self.stub_url,
                "CELERY_BENCH_S3_BUCKET": queue,
            }
        )
        env.update(extra)
        return env

    async def celery_versions(self) -> dict[str, str]:
        python = await self.celery_python()
        if python is None:
            return {}
        code = (
            "import importlib.metadata as m;"
            "print(';'.join(f'{p}={m.version(p)}' for p in ('celery','kombu','gevent','boto3',"
            "'redis')))"
        )
        rc, out, _err = await run_command([str(python), "-c", code], os.environ, 60)
        if rc != 0:
            return {}
        return dict(part.split("=", 1) for part in out.strip().split(";") if "=" in part)

    # ---- cleanup

    async def cleanup_redis(self) -> None:
        """Delete every key this run created in db 14 (by prefix and tracked id) and the
        Celery baseline's new keys in db 13."""
        doomed: list[bytes] = []
        for prefix in self._prefixes:
            doomed += [k async for k in self.redis.scan_iter(match=f"{prefix}*", count=1000)]
        prefixes = tuple(p.encode() for p in self._prefixes)
        tokens = {t.encode() for t in self._tokens}
        async for key in self.redis.scan_iter(match="arq:*", count=1000):
            if any(p in key for p in prefixes) or any(part in tokens for part in key.split(b":")):
                doomed.append(key)
        for start in range(0, len(doomed), 500):
            await self.redis.delete(*doomed[start : start + 500])
        celery_db = Redis.from_url(self.celery_redis_url)
        try:
            new = [
                k
                async for k in celery_db.scan_iter(count=1000)
                if k not in self._celery_keys_before
                and (
                    self.run_id.encode() in k
                    or k.startswith((b"celery-task", b"chord", b"_kombu.", b"unacked"))
                    or k.endswith((b".j", b".t"))
                )
            ]
            for start in range(0, len(new), 500):
                await celery_db.delete(*new[start : start + 500])
        finally:
            await celery_db.aclose()


def settings_for(h: Harness, prefix: str, **overrides: Any) -> Settings:
    """In-process settings matching ``h.env(prefix)`` (what the worker processes read)."""
    values: dict[str, Any] = {
        "redis_url": h.redis_url,
        "key_prefix": prefix,
        "storage": "s3",
        "s3_endpoint_url": h.stub_url,
        "s3_bucket": prefix,
        "s3_create_bucket": True,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)
