"""A process pool of ``PhotoAnalyzer``s for asyncio callers.

Rules: ``spawn`` context only (CUDA does not survive ``fork``); sessions are created in the
pool initializer, once per process, on ``device_ids[i % len(device_ids)]`` where ``i`` counts
started processes (a shared ``multiprocessing.Value``, so a rebuilt pool keeps rotating
devices); each process warms up with one dummy inference before it takes work. A dead process
(``BrokenProcessPool``) makes the pool rebuild itself and retry the job, up to ``max_retries``
times.

    pool = InferencePool(InferenceConfig.from_settings(settings))
    await pool.start()            # waits for every process to load + warm up
    out = await pool.analyze(jpeg_bytes)
    await pool.close()
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from multiprocessing.sharedctypes import Synchronized
from types import TracebackType
from typing import Any

from pipeline.inference.analyze import AnalysisOutput, PhotoAnalyzer
from pipeline.inference.config import InferenceConfig
from pipeline.inference.onnx_sessions import collected_fallbacks
from pipeline.settings import Settings

logger = logging.getLogger("pipeline.inference")


class WorkerStartError(RuntimeError):
    """A pool process could not load its models (the reason is in the message)."""


class InferenceError(RuntimeError):
    """An error raised inside a pool process that could not be sent back as itself."""


@dataclass(frozen=True, slots=True)
class PoolProcess:
    """One process of the pool: its pid, CUDA device id and the provider that really runs."""

    pid: int
    device_id: int
    provider: str
    fallback: str = ""  # why it is not on the requested provider (reported once, here)


# ------------------------------------------------------------------ inside pool processes

_ANALYZER: PhotoAnalyzer | None = None


def _exit_with_parent() -> None:
    """Exit this pool process as soon as its parent dies.

    A SIGKILLed parent (an arq worker killed by the OOM killer or a deploy) would otherwise
    leave the process blocked on the executor's queue forever, holding its GPU memory.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(
    config: InferenceConfig, counter: Synchronized[int], ready: multiprocessing.Queue[Any]
) -> None:
    """Pool initializer: build the analyzer once in this process, warm it up, report."""
    global _ANALYZER
    pid = os.getpid()
    _exit_with_parent()
    try:
        with counter.get_lock():
            slot = counter.value
            counter.value += 1
        ids = config.device_ids or [0]
        device_id = ids[slot % len(ids)]
        with collected_fallbacks() as fallbacks:  # reported once, by the pool's owner
            analyzer = PhotoAnalyzer.load(config, device_id=device_id)
        if config.warmup:
            analyzer.warmup()
        _ANALYZER = analyzer
        ready.put(("ready", pid, device_id, analyzer.provider, "; ".join(fallbacks)))
    except BaseException as exc:
        ready.put(("error", pid, f"{type(exc).__name__}: {exc}"))
        raise


def _ping() -> int:
    return os.getpid()


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (it must cross back to the parent), else a stand-in."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return InferenceError(f"{type(exc).__name__}: {exc}")
    return exc


def _analyze_in_worker(data: bytes, batched: bool) -> AnalysisOutput:
    if _ANALYZER is None:
        raise InferenceError("inference pool process was not initialised")
    try:
        return _ANALYZER.analyze(data, batched=batched)
    except Exception as exc:
        sendable = _sendable(exc)
        if sendable is exc:
            raise
        raise sendable from None


# ------------------------------------------------------------------ the pool


class InferencePool:
    """``ProcessPoolExecutor`` (spawn) of ``PhotoAnalyzer``s with rebuild-and-retry."""

    def __init__(
        self,
        config: InferenceConfig,
        *,
        processes: int | None = None,
        max_retries: int = 2,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.config = config
        self.processes = processes or config.pool_processes
        self.max_retries = max_retries
        self.start_timeout_s = start_timeout_s
        self._ctx: SpawnContext = multiprocessing.get_context("spawn")
        self._counter: Synchronized[int] = self._ctx.Value("i", 0)
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self._lock: asyncio.Lock | None = None
        self._closed = False
        self.workers: list[PoolProcess] = []
        self.rebuilds = 0
        self._rebuild_task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> InferencePool:
        return cls(InferenceConfig.from_settings(settings), **kwargs)

    @property
    def pids(self) -> list[int]:
        """Process ids of the current pool's processes."""
        return [w.pid for w in self.workers]

    @property
    def providers(self) -> list[str]:
        return [w.provider for w in self.workers]

    @property
    def started(self) -> bool:
        return self._executor is not None

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def start(self) -> None:
        """Start every process and wait until each has loaded its models and warmed up.

        Raises ``FileNotFoundError`` (missing model, before anything is spawned) or
        ``WorkerStartError`` naming the reason a process failed to initialise.
        """
        if self._closed:
            raise RuntimeError("InferencePool is closed")
        self.config.check_models()
        async with self._get_lock():
            if self._executor is None:
                await self._build()

    async def _build(self) -> None:
        ready: multiprocessing.Queue[Any] = self._ctx.Queue()
        executor = ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=self._ctx,
            initializer=_init_worker,
            initargs=(self.config, self._counter, ready),
        )
        # Processes are spawned on demand: one ping per process starts them all now.
        pings: list[Future[int]] = [executor.submit(_ping) for _ in range(self.processes)]
        started = time.monotonic()
        try:
            infos = await self._await_ready(ready, pings)
            await asyncio.gather(*(asyncio.wrap_future(p) for p in pings))
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            ready.close()
        self._executor = executor
        self._generation += 1
        self.workers = infos
        wanted = self.config.providers[0] if self.config.providers else None
        for w in infos:
            if wanted is not None and w.provider != wanted:
                logger.warning(
                    "inference pool process %d runs on %s although %s was requested: %s",
                    w.pid,
                    w.provider,
                    wanted,
                    w.fallback or "no reason given",
                )
        logger.info(
            "inference pool ready: %d process(es) in %.1f s (%s)",
            len(infos),
            time.monotonic() - started,
            ", ".join(f"pid {w.pid} on {w.provider} device {w.device_id}" for w in infos),
        )

    async def _await_ready(
        self, ready: multiprocessing.Queue[Any], pings: list[Future[int]]
    ) -> list[PoolProcess]:
        infos: list[PoolProcess] = []
        deadline = time.monotonic() + self.start_timeout_s

        def next_message(timeout: float) -> Any:
            try:
                return ready.get(timeout=timeout)
            except queue.Empty:
                return None

        while len(infos) < self.processes:
            msg = await asyncio.to_thread(next_message, 0.25)
            if msg is None:
                failed = next((p for p in pings if p.done() and p.exception() is not None), None)
                if failed is not None:
                    msg = await asyncio.to_thread(next_message, 1.0)
                    reason = msg[2] if msg and msg[0] == "error" else repr(failed.exception())
                    raise WorkerStartError(f"inference pool process failed to start: {reason}")
                if time.monotonic() > deadline:
                    raise WorkerStartError(
                        f"inference pool processes not ready after {self.start_timeout_s:.0f} s"
                        f" ({len(infos)} of {self.processes} ready)"
                    )
                continue
            if msg[0] == "error":
                raise WorkerStartError(f"inference pool process {msg[1]} failed to start: {msg[2]}")
            infos.append(
                PoolProcess(pid=msg[1], device_id=msg[2], provider=msg[3], fallback=msg[4])
            )
        return infos

    async def _rebuild(self, generation: int) -> None:
        """Rebuild once, in a task of its own: a job cancelled while it waits (arq's timeout,
        the job's time budget) must not cancel the spawn half-way and leave no pool."""
        task = self._rebuild_task
        if task is None or task.done():
            task = asyncio.create_task(self._do_rebuild(generation))
            self._rebuild_task = task
        await asyncio.shield(task)

    async def _do_rebuild(self, generation: int) -> None:
        async with self._get_lock():
            if self._closed:
                raise RuntimeError("InferencePool is closed")
            if generation != self._generation and self._executor is not None:
                return  # another caller already rebuilt it
            old, self._executor = self._executor, None
            if old is not None:
                old.shutdown(wait=False, cancel_futures=True)
            await self._build()
            self.rebuilds += 1

    async def analyze(self, data: bytes, *, batched: bool = True) -> AnalysisOutput:
        """Analyse one photo in a pool process.

        A dead process (``BrokenProcessPool``) rebuilds the pool and the job is retried up to
        ``max_retries`` times, then ``BrokenProcessPool`` is raised (the pool is rebuilt for
        the next job anyway). Other errors (e.g. ``InvalidImage``) propagate as they are.
        """
        if self._executor is None:
            pending = self._rebuild_task
            if pending is not None and not pending.done():
                await asyncio.shield(pending)
            if self._executor is None:
                await self.start()
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            executor, generation = self._executor, self._generation
            if executor is None:
                raise RuntimeError("InferencePool is closed")
            try:
                return await loop.run_in_executor(executor, _analyze_in_worker, data, batched)
            except BrokenProcessPool as exc:
                if self._closed:
                    raise
                give_up = attempt >= self.max_retries
                if give_up:
                    logger.error(
                        "inference pool process died (%s); giving up on the job after %d "
                        "retries, rebuilding the pool for the next one",
                        exc,
                        attempt,
                    )
                else:
                    attempt += 1
                    logger.warning(
                        "inference pool process died (%s); rebuilding the pool and retrying "
                        "the job (retry %d of %d)",
                        exc,
                        attempt,
                        self.max_retries,
                    )
                # Rebuild either way, so the jobs after this one find a healthy pool.
                await self._rebuild(generation)
                if give_up:
                    raise

    async def close(self) -> None:
        """Stop the processes (waits for running jobs to finish, cancels queued ones)."""
        self._closed = True
        executor, self._executor = self._executor, None
        self.workers = []
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def __aenter__(self) -> InferencePool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
