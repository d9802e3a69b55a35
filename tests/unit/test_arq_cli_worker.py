"""Every way arq's CLI starts a worker builds the ``ResilientWorker`` a role's settings name:
``arq workers.<role>.WorkerSettings`` (``run_worker``) and ``… --watch DIR`` (``watch_reload``,
which calls the ``create_worker`` that ``arq.cli`` imported by name before any settings module,
and so ``install()``, ran).

The CLI runs for real (click's runner, in a thread of its own so that its event loops never
meet the test's); only the last step is stubbed: the worker's ``run``/``async_run`` record the
class and return, and ``watchfiles.awatch`` reports no change, so nothing connects to Redis.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import arq.cli
import arq.worker
import pytest
from click.testing import CliRunner, Result

from pipeline.runtime import worker
from pipeline.runtime.roles import worker_settings_class

#: arq's CLI configures logging with this instead of its own dict (which would turn off every
#: logger the test process already has).
QUIET_LOG: dict[str, Any] = {"version": 1, "disable_existing_loggers": False}


async def _noop(ctx: dict[str, Any]) -> None:
    return None


def arqs_create_worker(settings_cls: Any, **kwargs: Any) -> arq.worker.Worker:
    """What arq's own ``create_worker`` does (the one ``arq.cli`` holds before install())."""
    return arq.worker.Worker(**{**arq.worker.get_kwargs(settings_cls), **kwargs})


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[type]:
    """The classes of the workers the CLI starts (run and async_run record and return)."""
    classes: list[type] = []

    def run(self: arq.worker.Worker) -> None:
        classes.append(type(self))
        self.loop.close()  # the loop Worker.__init__ made in the CLI's thread

    def async_run(self: arq.worker.Worker) -> Any:
        classes.append(type(self))
        return asyncio.sleep(0)

    monkeypatch.setattr(arq.worker.Worker, "run", run)
    monkeypatch.setattr(arq.worker.Worker, "async_run", async_run)
    return classes


@pytest.fixture
def cli_before_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """The state of a fresh ``arq`` process: arq.cli imported (binding arq's create_worker by
    name), no settings module imported yet, so install() has not run."""
    monkeypatch.setattr(arq.worker, "create_worker", arqs_create_worker)
    monkeypatch.setitem(vars(arq.cli), "create_worker", arqs_create_worker)


@pytest.fixture
def no_file_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    async def awatch(*paths: Any, **options: Any) -> AsyncIterator[set[Any]]:
        for _ in ():
            yield set()

    watchfiles = types.ModuleType("watchfiles")
    watchfiles.awatch = awatch  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "watchfiles", watchfiles)


def invoke_cli(args: list[str]) -> Result:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(CliRunner().invoke, arq.cli.cli, args).result()


@pytest.mark.usefixtures("cli_before_install", "no_file_changes")
@pytest.mark.parametrize("watch", [False, True], ids=["run", "watch"])
def test_every_way_arqs_cli_starts_a_worker_builds_resilient_worker(
    built: list[type], watch: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI appends its working directory
    # what importing workers/<role>.py does: build the settings class (which calls install())
    settings = worker_settings_class(
        "test", {"functions": [_noop], "handle_signals": False, "queue_name": "test:cli"}
    )
    monkeypatch.setattr(sys.modules[__name__], "WorkerSettings", settings, raising=False)

    args = [f"{__name__}.WorkerSettings", "--custom-log-dict", f"{__name__}.QUIET_LOG"]
    result = invoke_cli([*args, "--watch", str(tmp_path)] if watch else args)

    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert built == [worker.ResilientWorker], f"arq {'--watch' if watch else ''} built {built}"


@pytest.mark.usefixtures("cli_before_install")
def test_install_replaces_create_worker_where_arqs_cli_looks_it_up() -> None:
    worker.install()
    assert arq.worker.create_worker is worker.create_worker  # run_worker's (looked up per call)
    assert vars(arq.cli)["create_worker"] is worker.create_worker  # watch_reload's
