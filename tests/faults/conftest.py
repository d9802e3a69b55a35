"""Fault-and-abuse suite: shared helpers, private Redis servers and the summary table.

Every test here is marked ``faults`` (``pytest -m faults tests/faults``). The numbers each test
observes go into :data:`REPORT` (a :class:`~pipeline.testing.faultreport.FaultReport`); at the
end of the session the table is printed, and with ``--faults-report PATH`` the report is
written to PATH as JSON. No test writes into ``bench/``: ``python -m bench.faults`` runs this
suite with ``--faults-report`` and writes ``bench/FAULTS.md`` from the JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioboto3
import msgpack
import pytest
from botocore.config import Config
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from pipeline.client import PipelineClient
from pipeline.runtime.joins import JoinStore
from pipeline.schemas import SessionRecord
from pipeline.state.ids import session_join_id
from pipeline.testing.faultreport import FaultReport
from pipeline.testing.onnx_fixtures import (
    build_detect_model,
    build_segment_model,
    encode_png,
    make_nursery_photo,
)
from tests.conftest import REDIS_URL, WorkerProcess, busy_factor, scaled
from tests.e2e.conftest import Cluster, cluster_settings
from tests.redis_server import RedisServer, free_port

SMALL_TRAYS = ((30, 40, 300, 440), (340, 40, 610, 440))

#: Keys of a run's prefix that are permanent by design (no TTL): dead letters, breaker state,
#: arq queue sorted sets, and the watchdog's indexes (empty, hence absent, when all is done).
PERMANENT_KEY_PATTERNS = (
    re.compile(r"^[^:]+:deadletter$"),
    re.compile(r"^[^:]+:deadletter:order$"),
    re.compile(r"^[^:]+:breaker:[^:]+$"),
    re.compile(r"^[^:]+:queue:(io|cpu|gpu)$"),
    re.compile(r"^[^:]+:sessions:active$"),
    re.compile(r"^[^:]+:joins:open$"),
)

ARTIFACT_NAME = (
    r"(original\.(jpg|png|webp)|thumbnail_original\.jpg|processed\.avif"
    r"|thumbnail_processed\.jpg|results\.json)"
)


def key_pattern(session_id: str) -> re.Pattern[str]:
    """Every S3 key of a session: built from server ids only (DESIGN: S3 keys)."""
    return re.compile(rf"^{re.escape(session_id)}/(\d+/)?{ARTIFACT_NAME}$")


# ---------------------------------------------------------------- the summary table


REPORT = FaultReport()


@pytest.fixture(scope="session")
def fault_report() -> FaultReport:
    return REPORT


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/faults/" not in report.nodeid:
        return
    name = report.nodeid.split("tests/faults/", 1)[1]
    if report.when == "call" or report.outcome != "passed":
        previous = REPORT.outcomes.get(name)
        if previous in (None, "passed"):
            REPORT.outcomes[name] = report.outcome


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--faults-report",
        metavar="PATH",
        default=None,
        help="write what the fault suite observed to PATH as JSON (python -m bench.faults "
        "renders bench/FAULTS.md from it)",
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT.outcomes:
        return
    terminalreporter.section("plantpipe fault-and-abuse summary")
    terminalreporter.write_line(REPORT.table())
    for note in REPORT.notes:
        terminalreporter.write_line(f"- {note}")
    terminalreporter.write_line("(bench/FAULTS.md is written by `python -m bench.faults`)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--faults-report")
    if path:
        REPORT.write(Path(path))


# ---------------------------------------------------------------- photos


@functools.lru_cache(maxsize=1024)
def small_photo(seed: int, width: int = 640, height: int = 480) -> tuple[bytes, int]:
    """A 640×480 nursery photo (PNG) and how many plants it holds."""
    photo = make_nursery_photo(width, height, SMALL_TRAYS, skip=0.2, seed=seed)
    return encode_png(photo.rgb), len(photo.squares)


# ---------------------------------------------------------------- clusters


@pytest.fixture(scope="session")
def fault_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fault-models")
    seg = build_segment_model(root / "seg.onnx", input_size=320, batch=1)
    det = build_detect_model(root / "det.onnx", input_size=512)
    return seg, det


ClusterFactory = Callable[..., Cluster]


JOB_TIMEOUTS = ("gpu_job_timeout_s", "cpu_job_timeout_s", "io_job_timeout_s")

#: What every fault cluster uses unless a test says otherwise: short, honest job timeouts so a
#: killed job is re-run within seconds, a fast AVIF encoder (the 2-core CI box), 1 ONNX thread.
FAULT_DEFAULTS: dict[str, Any] = {
    "avif_speed": 10,
    "gpu_job_timeout_s": 8,
    "cpu_job_timeout_s": 10,
    "io_job_timeout_s": 10,
    "retry_delays_s": [0.3, 0.6, 1.2],
    "breaker_reset_s": 2.0,
    "watchdog_interval_s": 1,
    "join_stale_s": 2,
    "log_json": True,
}


@pytest.fixture
def make_fault_cluster(fault_models: tuple[Path, Path]) -> Iterator[ClusterFactory]:
    made: list[Cluster] = []

    def factory(**overrides: Any) -> Cluster:
        values = {**FAULT_DEFAULTS, **overrides}
        factor = busy_factor()  # a busy machine: longer job timeouts, fewer spurious retries
        deadline = int(values.get("session_deadline_s", 1800))
        for name in JOB_TIMEOUTS:  # still shorter than a session's deadline (settings check)
            if name in values:
                values[name] = min(
                    math.ceil(values[name] * factor), max(values[name], deadline - 1)
                )
        cluster = Cluster(cluster_settings(fault_models, **values))
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.stop_all()
        if cluster.settings.redis_url == REDIS_URL:
            _delete_prefix(cluster.settings.key_prefix)


def _delete_prefix(prefix: str) -> None:
    client = SyncRedis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def worker_pid(cluster: Cluster, role: str) -> int:
    return int(cluster.workers[role].proc.pid)


def pool_pids(gpu_pid: int) -> list[int]:
    """Children of the gpu worker that run ONNX Runtime (the spawn pool; not its tracker)."""
    out = subprocess.run(["pgrep", "-P", str(gpu_pid)], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    found: list[int] = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"resource_tracker" in cmdline:
            continue
        found.append(pid)
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for {pid}")


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and its direct children (the gpu worker and its pool)."""
    total = rss_kib(pid)
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    for child in out.stdout.split():
        with contextlib.suppress(OSError, LookupError):
            total += rss_kib(int(child))
    return total


# ---------------------------------------------------------------- private Redis servers


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: the fault suite starts private instances")
    servers: list[RedisServer] = []

    def start(name: str = "redis", **kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / name, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class SentinelProcess:
    """One ``redis-server --sentinel`` watching ``service`` (its config file is its own: a
    Sentinel rewrites it)."""

    def __init__(self, workdir: Path, service: str, master_port: int, password: str | None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "sentinel.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {workdir}",
            f"logfile {workdir / 'sentinel.log'}",
            f"sentinel monitor {service} 127.0.0.1 {master_port} 2",
            # 1 s gave spurious failovers on a loaded 2-core machine
            f"sentinel down-after-milliseconds {service} 2000",
            f"sentinel failover-timeout {service} 4000",
            f"sentinel parallel-syncs {service} 1",
        ]
        if password:
            lines.append(f"sentinel auth-pass {service} {password}")
        self.config.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            ["redis-server", str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class SentinelTopology:
    """A master, a replica and three Sentinels, all ``redis-server`` processes with an AOF
    (a restarted node comes back with its data, as a replica of whoever is master now)."""

    service = "plantpipe"

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.password = password
        first = RedisServer(workdir / "node-a", aof=True, password=password)
        first.start()
        second = RedisServer(workdir / "node-b", aof=True, password=password, replica_of=first.port)
        second.start()
        self.nodes = {first.port: first, second.port: second}
        self.sentinels = [
            SentinelProcess(workdir / f"sentinel-{i}", self.service, first.port, password)
            for i in range(3)
        ]
        self.wait_synced(scaled(20))

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{auth}{hosts}/{self.service}/{db}"

    def _ask(self, sentinel: SentinelProcess) -> int | None:
        client = SyncRedis(port=sentinel.port, socket_timeout=1)
        try:
            reply = client.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
            return int(reply[1]) if reply else None
        finally:
            client.close()

    def _replicas_known(self, sentinel: SentinelProcess) -> int:
        client = SyncRedis(port=sentinel.port, socket_timeout=1, decode_responses=True)
        try:
            flat = client.execute_command("SENTINEL", "master", self.service)
        finally:
            client.close()
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return int(fields.get("num-slaves", 0))

    def master_port(self) -> int:
        """The master's port as a majority of the Sentinels see it."""
        seen: list[int] = []
        for sentinel in self.sentinels:
            with contextlib.suppress(Exception):
                port = self._ask(sentinel)
                if port is not None:
                    seen.append(port)
        best = max(set(seen), key=seen.count) if seen else None
        if best is None or seen.count(best) < 2:
            raise RuntimeError(f"no Sentinel majority on the master: {seen}")
        return best

    def master(self) -> RedisServer:
        return self.nodes[self.master_port()]

    def replica(self) -> RedisServer:
        port = self.master_port()
        return next(node for p, node in self.nodes.items() if p != port)

    def wait_synced(self, timeout: float) -> None:
        """Until the replica is online at the master's offset and every Sentinel knows it."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                master = self.master()
                client = SyncRedis(port=master.port, password=self.password, socket_timeout=1)
                try:
                    info: dict[str, Any] = client.info("replication")  # type: ignore[assignment]
                finally:
                    client.close()
                replica = info.get("slave0") or {}
                in_step = replica.get("state") == "online" and replica.get("offset") == info.get(
                    "master_repl_offset"
                )
                known = all(self._replicas_known(s) >= 1 for s in self.sentinels)
                if in_step and known:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("replica not in step with the master in time")
            time.sleep(0.1)

    def wait_failover(self, old_port: int, timeout: float) -> int:
        """Until a majority of Sentinels name a master other than ``old_port`` and it answers
        as master; returns its port."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                port = self.master_port()
                if port != old_port:
                    client = SyncRedis(port=port, password=self.password, socket_timeout=1)
                    try:
                        role = client.execute_command("ROLE")
                    finally:
                        client.close()
                    if role[0] == b"master":
                        return port
            if time.monotonic() > deadline:
                raise TimeoutError(f"no failover from {old_port} within {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes.values():
            node.stop()


@pytest.fixture
def sentinel_topology(tmp_path: Path) -> Iterator[Callable[..., SentinelTopology]]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: the fault suite starts private instances")
    made: list[SentinelTopology] = []

    def start(password: str | None = None) -> SentinelTopology:
        topology = SentinelTopology(tmp_path / f"sentinel-{len(made)}", password)
        made.append(topology)
        return topology

    yield start
    for topology in made:
        topology.stop()


# ---------------------------------------------------------------- inspection helpers


def s3_client(endpoint: str) -> Any:
    return aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


async def bucket_objects(endpoint: str, bucket: str) -> dict[str, int]:
    """Every key of ``bucket`` with its size."""
    found: dict[str, int] = {}
    async with s3_client(endpoint) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = int(obj["Size"])
    return found


async def prefix_ttls(redis: Redis, prefix: str) -> dict[str, int]:
    """Every key of ``prefix`` with its TTL (-1: none)."""
    out: dict[str, int] = {}
    client: Any = redis
    async for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        out[key] = int(await client.ttl(key))
    return {k: v for k, v in out.items() if v != -2}


def unexpected_permanent(ttls: dict[str, int]) -> list[str]:
    """Keys without a TTL that are not permanent by design."""
    return sorted(
        k
        for k, ttl in ttls.items()
        if ttl == -1 and not any(p.match(k) for p in PERMANENT_KEY_PATTERNS)
    )


def permanent_kinds(prefix: str, ttls: dict[str, int]) -> set[str]:
    return {
        k.replace(prefix, "{prefix}", 1)
        for k, ttl in ttls.items()
        if ttl == -1 and any(p.match(k) for p in PERMANENT_KEY_PATTERNS)
    }


@dataclass
class Expected:
    """What a session must end as."""

    session_id: str
    counts: list[int | None]  # per photo: plants expected, None = a bad photo (must fail)

    @property
    def status(self) -> str:
        bad = sum(1 for c in self.counts if c is None)
        if bad == 0:
            return "completed"
        return "failed" if bad == len(self.counts) else "warning"


@dataclass
class SessionCheck:
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    double: list[str] = field(default_factory=list)
    artifacts: int = 0
    artifacts_lost: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return self.lost + self.wrong + self.double + self.artifacts_lost


async def check_sessions(
    client: PipelineClient,
    expected: list[Expected],
    *,
    objects: dict[str, int] | None,
    report: FaultReport | None = None,
) -> SessionCheck:
    """Each session terminal and truthful; each photo counted once; each artifact in the
    object store with its size (``objects``: key → size; None skips the store check)."""
    check = SessionCheck()
    joins = JoinStore(client.redis, client.settings)
    for exp in expected:
        try:
            record: SessionRecord = await client.status(exp.session_id)
        except LookupError:
            check.lost.append(f"{exp.session_id}: record gone")
            continue
        if not record.terminal:
            check.lost.append(f"{exp.session_id}: still {record.status} ({record.stage})")
            continue
        if record.status != exp.status:
            check.wrong.append(
                f"{exp.session_id}: {record.status} (want {exp.status}): {record.reason}"
            )
        reports = await joins.results(session_join_id(exp.session_id))
        if len(reports) != len(exp.counts):
            check.double.append(
                f"{exp.session_id}: {len(reports)} join reports for {len(exp.counts)} photos"
            )
        try:
            result = await client.result(exp.session_id)
        except LookupError as exc:
            check.lost.append(f"{exp.session_id}: no result ({exc})")
            continue
        got = [p.detected if p.status == "done" else None for p in result.photos]
        if got != exp.counts:
            check.double.append(f"{exp.session_id}: per-photo counts {got} != {exp.counts}")
        want_total = sum(c for c in exp.counts if c is not None)
        if result.total_detected != want_total:
            check.double.append(
                f"{exp.session_id}: total_detected {result.total_detected} != {want_total}"
            )
        if objects is not None:
            pattern = key_pattern(exp.session_id)
            for art in record.artifacts:
                check.artifacts += 1
                if not pattern.match(art.key):
                    check.wrong.append(f"{exp.session_id}: key {art.key!r} not server-built")
                stored = await client.artifacts.get(art.artifact_id)
                size = stored.size if stored else None
                if art.state != "uploaded" or objects.get(art.key) != size:
                    check.artifacts_lost.append(
                        f"{art.key}: state {art.state}, record size {size}, "
                        f"stored {objects.get(art.key)}"
                    )
    if report is not None:
        report.sessions_checked += len(expected)
        report.sessions_lost += len(check.lost)
        report.double_counts += len(check.double)
        report.artifacts_checked += check.artifacts
        report.artifacts_lost += len(check.artifacts_lost)
    return check


class PayloadScanner:
    """Samples ``arq:job:*`` payloads (and ``arq:result:*`` records) of the given sessions
    while a load runs: every one must be msgpack (a map), none pickle (pickle protocol 2+
    starts with 0x80)."""

    def __init__(self, redis: Redis, session_ids: set[str]) -> None:
        self.redis = redis
        self.session_ids = session_ids
        self.seen: set[str] = set()
        self.pickled: list[str] = []
        self.undecodable: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def scan_once(self) -> None:
        client: Any = self.redis
        keys = [raw async for raw in client.scan_iter(match="arq:job:*", count=1000)]
        keys += [raw async for raw in client.scan_iter(match="arq:result:*", count=1000)]
        for raw in keys:
            key = raw.decode()
            if key in self.seen or not any(s in key for s in self.session_ids):
                continue
            value = await client.get(key)
            if value is None:
                continue
            self.seen.add(key)
            if value[:1] == b"\x80":
                self.pickled.append(key)
                continue
            try:
                decoded = msgpack.unpackb(value, raw=False, strict_map_key=False)
            except Exception:
                self.undecodable.append(key)
                continue
            if not isinstance(decoded, dict):
                self.undecodable.append(key)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.scan_once()
            await asyncio.sleep(0.3)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PayloadScanner]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def log_reason(line: str) -> str | None:
    """What a worker log line says went wrong with a job, if anything."""
    if "TimeoutError" in line and "infer_photo failed" in line:
        return "arq job timeout: " + line.split(" ! ", 1)[-1][:80]
    if "max retries" in line:
        return "arq max tries: " + line[:120]
    if '"job.retry"' in line or '"job.gave_up"' in line:
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        return f"{entry.get('event')}: {entry.get('error_code')}: {str(entry.get('reason'))[:120]}"
    return None


async def settle_sessions(
    client: PipelineClient,
    expected: list[Expected],
    workers: list[WorkerProcess],
    timeout_s: float,
) -> list[str]:
    """Wait (``timeout_s`` in all) for every expected session and its artifacts to settle;
    returns a description of each one that did not."""
    stuck: list[str] = []
    settle_by = time.monotonic() + timeout_s
    for exp in expected:
        try:
            await client.wait(
                exp.session_id, timeout=max(1.0, settle_by - time.monotonic()), artifacts=True
            )
        except TimeoutError:
            stuck.append(await describe_stuck(client, exp.session_id, workers))
    return stuck


async def describe_stuck(
    client: PipelineClient, session_id: str, workers: list[WorkerProcess]
) -> str:
    """Where a session that did not settle stands, and what the worker logs say about it."""
    record = await client.status(session_id)
    why = sorted(
        {
            reason
            for w in workers
            for line in w.lines
            if session_id in line and (reason := log_reason(line)) is not None
        }
    )
    return (
        f"{session_id}: {record.status}/{record.stage}, photos "
        f"{[p.state for p in record.photos]}, artifacts "
        f"{record.artifacts_uploaded}/{len(record.artifacts)}; worker log: {why}"
    )


def dump_logs(directory: Path, workers: list[WorkerProcess]) -> str:
    """Write every worker's output for the post-mortem; returns where."""
    for n, w in enumerate(workers):
        (directory / f"{n:02d}-{w.role}.log").write_text(w.output())
    return f"worker logs in {directory}"


async def forget_jobs(redis: Redis, session_id: str) -> None:
    """Delete arq's job records of a session that no worker of the test will consume."""
    client: Any = redis
    keys = [k async for k in client.scan_iter(match=f"arq:job:*{session_id}*", count=1000)]
    if keys:
        await client.delete(*keys)


async def submit_and_wait(
    client: PipelineClient, photos: list[bytes], *, timeout: float, started: asyncio.Event | None
) -> tuple[str, SessionRecord]:
    sid = await client.submit(photos)
    if started is not None:
        started.set()
    record = await client.wait(sid, timeout=timeout, artifacts=True)
    return sid, record


async def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> None:
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
