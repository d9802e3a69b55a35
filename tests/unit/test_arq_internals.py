"""The arq internals that ``ResilientWorker`` (pipeline/runtime/worker.py) relies on.

``ResilientWorker`` overrides arq's ``start_jobs`` and ``_poll_iteration``, uses the worker's
own state (``sem``, ``job_counter``, ``max_jobs``, ``tasks``, ``pool``, ``queue_name``,
``in_progress_timeout_s``, ``poll_delay_s``, ``burst``, ``loop``, ``ctx``), calls
``run_job`` and ``_release_sem_dec_counter_on_complete``, claims with arq's in-progress key
(``arq.constants.in_progress_key_prefix``, ``arq.utils.timestamp_ms``), and makes
``arq workers.<role>.WorkerSettings`` build it by replacing ``arq.worker.create_worker``
(which ``run_worker`` looks up at call time) and the ``create_worker`` that ``arq.cli`` imported
by name (what ``--watch`` calls), and filtering options with
``arq.worker.get_kwargs``. None of that is arq's public API: an arq upgrade that changes any
of it must fail here, naming what changed, rather than in production.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import arq.cli
import arq.constants
import arq.utils
import arq.worker
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pipeline.runtime.worker import ResilientWorker

REPO = Path(__file__).resolve().parents[2]
Worker = arq.worker.Worker


def _params(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


def _names(fn: Callable[..., Any]) -> set[str]:
    """Global and attribute names the function's code uses (nested code included)."""
    found: set[str] = set()
    stack = [fn.__code__]
    while stack:
        code = stack.pop()
        found.update(code.co_names)
        stack.extend(c for c in code.co_consts if inspect.iscode(c))
    return found


async def _noop(ctx: dict[str, Any]) -> None:
    return None


def _worker(**options: Any) -> arq.worker.Worker:
    """An arq Worker built the way arq builds one (no Redis connection is made)."""
    return Worker(functions=[_noop], handle_signals=False, **options)


def test_arq_is_pinned_and_the_installed_version_is_in_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if re.match(r"arq\b", d)]
    assert len(pins) == 1, f"pyproject.toml should name arq once: {pins}"
    spec = SpecifierSet(pins[0][len("arq") :].strip())
    assert any(s.operator == "<" for s in spec), (
        f"arq is not capped ({pins[0]}): ResilientWorker relies on arq internals; cap it at the "
        "next minor version and run this test before raising the cap"
    )
    installed = Version(metadata.version("arq"))
    assert installed in spec, f"arq {installed} is installed but pyproject.toml says {pins[0]}"


@pytest.mark.parametrize(
    ("name", "params", "coroutine"),
    [
        ("start_jobs", ["self", "job_ids"], True),
        ("_poll_iteration", ["self"], True),
        ("run_job", ["self", "job_id", "score"], True),
        ("_release_sem_dec_counter_on_complete", ["self"], False),
        ("heart_beat", ["self"], True),
        ("main", ["self"], True),
    ],
)
def test_worker_methods_have_the_shape_resilient_worker_expects(
    name: str, params: list[str], coroutine: bool
) -> None:
    method = getattr(Worker, name, None)
    assert method is not None, f"arq.worker.Worker.{name} is gone (ResilientWorker uses it)"
    assert _params(method) == params, (
        f"arq.worker.Worker.{name}{inspect.signature(method)} changed: ResilientWorker expects "
        f"({', '.join(params)})"
    )
    assert inspect.iscoroutinefunction(method) is coroutine, (
        f"arq.worker.Worker.{name} is {'no longer' if coroutine else 'now'} a coroutine function"
    )


def test_the_overrides_keep_arqs_signatures() -> None:
    for name in ("start_jobs", "_poll_iteration"):
        ours, theirs = getattr(ResilientWorker, name), getattr(Worker, name)
        assert ours is not theirs, f"ResilientWorker no longer overrides {name}"
        assert _params(ours) == _params(theirs), (
            f"ResilientWorker.{name}{inspect.signature(ours)} no longer matches arq's "
            f"{name}{inspect.signature(theirs)}"
        )


def test_the_poll_loop_still_goes_through_the_overridden_methods() -> None:
    """arq's main loop calls ``_poll_iteration`` on every ``poll`` step, and arq's
    ``_poll_iteration`` (which ours calls through ``super()``) claims with ``start_jobs``."""
    main = _names(Worker.main)
    assert {"poll", "_poll_iteration"} <= main, (
        f"Worker.main no longer runs `poll(...)` + `self._poll_iteration()`: uses {sorted(main)}"
    )
    poll_iteration = _names(Worker._poll_iteration)
    wanted = {"start_jobs", "job_counter", "max_jobs", "tasks", "queue_name", "heart_beat"}
    assert wanted <= poll_iteration, (
        f"Worker._poll_iteration no longer uses {sorted(wanted - poll_iteration)}"
    )
    assert vars(arq.worker).get("poll") is arq.utils.poll, (
        "arq.worker no longer uses arq.utils.poll"
    )
    assert inspect.isasyncgenfunction(arq.utils.poll), "arq.utils.poll is not an async generator"
    assert _params(arq.utils.poll) == ["step"], f"arq.utils.poll{inspect.signature(arq.utils.poll)}"


async def test_worker_state_is_what_resilient_worker_reads() -> None:
    worker = _worker(queue_name="q:test", max_jobs=3, poll_delay=0.25, burst=True, job_timeout=5)
    missing = object()
    checks: dict[str, Callable[[Any], bool]] = {
        # start_jobs takes up to max_jobs - job_counter permits of sem without waiting
        "sem": lambda v: isinstance(v, asyncio.Semaphore) and v._value >= 3,
        "job_counter": lambda v: v == 0,
        "max_jobs": lambda v: v == 3,
        "tasks": lambda v: v == {},
        "queue_name": lambda v: v == "q:test",
        "poll_delay_s": lambda v: v == 0.25,
        "burst": lambda v: v is True,
        "ctx": lambda v: isinstance(v, dict),
        "loop": lambda v: isinstance(v, asyncio.AbstractEventLoop),
        "in_progress_timeout_s": lambda v: isinstance(v, int | float) and v > 5,
    }
    try:
        problems = [
            f"Worker.{name} = {getattr(worker, name, '<missing>')!r}"
            for name, ok in checks.items()
            if not ok(getattr(worker, name, missing))
        ]
        if not isinstance(inspect.getattr_static(Worker, "pool", None), property):
            problems.append("Worker.pool is no longer a property")
        assert not problems, "arq's Worker state changed:\n  " + "\n  ".join(problems)

        # What start_jobs' done-callback relies on: one slot and one count given back.
        await worker.sem.acquire()
        worker.job_counter = 1
        before = worker.sem._value
        worker._release_sem_dec_counter_on_complete()
        assert worker.job_counter == 0
        assert worker.sem._value == before + 1
    finally:
        if worker.loop is not asyncio.get_running_loop():
            worker.loop.close()


def test_claim_constants() -> None:
    prefix = arq.constants.in_progress_key_prefix
    assert isinstance(prefix, str), f"in_progress_key_prefix is {prefix!r}"
    assert prefix == "arq:in-progress:", (
        f"arq's in-progress key prefix changed to {prefix!r}: workers of different arq "
        "versions would no longer see each other's claims"
    )
    now = arq.utils.timestamp_ms()
    assert isinstance(now, int)
    assert abs(now - time.time() * 1000) < 5_000, "arq.utils.timestamp_ms is not epoch ms"


def test_create_worker_can_be_replaced_and_arq_uses_the_replacement() -> None:
    assert callable(arq.worker.create_worker)
    assert _params(arq.worker.create_worker) == ["settings_cls", "kwargs"]
    # run_worker (what `arq workers.io.WorkerSettings` calls) looks create_worker up at call
    # time, so install() replacing the module attribute takes effect.
    assert "create_worker" in _names(arq.worker.run_worker), (
        "arq.worker.run_worker no longer calls create_worker: install() has no effect"
    )
    command = getattr(arq.cli.cli, "callback", arq.cli.cli)  # a click command
    assert "run_worker" in _names(command), "arq's CLI no longer runs run_worker"
    # --watch runs watch_reload, which calls the create_worker arq.cli imported by name:
    # install() replaces that binding too.
    assert {"watch_reload"} <= _names(command), "arq's CLI no longer runs watch_reload"
    assert "create_worker" in _names(arq.cli.watch_reload), (
        "arq.cli.watch_reload no longer calls create_worker: check how --watch builds a worker"
    )
    assert "create_worker" in vars(arq.cli), "arq.cli no longer imports create_worker by name"


def test_get_kwargs_keeps_only_worker_options() -> None:
    """create_worker passes get_kwargs(settings) to the worker class: it must drop what is
    not an option of Worker.__init__ (``worker_class``) and keep arq's options."""
    get_kwargs: Any = arq.worker.get_kwargs
    settings = {"max_jobs": 3, "poll_delay": 0.1, "worker_class": ResilientWorker, "x": 1}
    assert get_kwargs(settings) == {"max_jobs": 3, "poll_delay": 0.1}

    class Settings:
        queue_name = "q"
        worker_class = ResilientWorker

    assert get_kwargs(Settings) == {"queue_name": "q"}
    options = set(inspect.signature(Worker).parameters)
    wanted = {
        "functions",
        "queue_name",
        "redis_settings",
        "redis_pool",
        "burst",
        "on_startup",
        "on_shutdown",
        "on_job_start",
        "on_job_end",
        "after_job_end",
        "max_jobs",
        "job_timeout",
        "keep_result",
        "poll_delay",
        "max_tries",
        "health_check_interval",
        "ctx",
        "job_serializer",
        "job_deserializer",
        "handle_signals",
    }
    assert wanted <= options, f"Worker.__init__ lost options {sorted(wanted - options)}"
