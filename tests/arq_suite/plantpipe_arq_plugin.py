"""pytest plugin: arq's own test suite against ``ResilientWorker`` (see ``tests/arq_suite``).

Loaded with ``-p plantpipe_arq_plugin`` by ``python -m tests.arq_suite`` only, before pytest
imports arq's conftest and test modules, so their ``from arq.worker import Worker`` and
``from arq import Worker`` already get ``ResilientWorker``. The private Redis server's port
comes in :data:`PORT_ENV`.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
from typing import Any
from urllib.parse import urlsplit

import arq
import arq.cli
import arq.worker
import pytest
import redis.asyncio.connection
import redis.connection

from pipeline.runtime import worker as plantpipe_worker

PORT_ENV = "PLANTPIPE_ARQ_SUITE_REDIS_PORT"

#: Where ``ResilientWorker`` is meant to behave unlike arq's worker (README, "arq's own test
#: suite"): arq's worker lets a Redis connection error or timeout out of ``_poll_iteration`` and
#: stops; ours keeps polling through it for up to ``redis_outage_limit_s`` (300 s by default),
#: so these tests' ``pytest.raises`` around ``_poll_iteration`` see nothing raised. Node id:
#: the reason. Each is a strict xfail: a listed test that passes fails the run.
_RIDE_OUT = (
    "plantpipe's documented behaviour: ResilientWorker rides out a Redis {} in its poll loop "
    "(keeps polling up to redis_outage_limit_s) where arq's worker raises it and stops"
)
EXPECTED_TO_DIFFER: dict[str, str] = {
    "tests/test_worker.py::test_worker_retry[exception_thrown0]": _RIDE_OUT.format(
        "ConnectionError (retries spent)"
    ),
    "tests/test_worker.py::test_worker_retry[exception_thrown1]": _RIDE_OUT.format(
        "TimeoutError (retries spent)"
    ),
    "tests/test_worker.py::test_worker_crash[exception_thrown0]": _RIDE_OUT.format(
        "ConnectionError"
    ),
    "tests/test_worker.py::test_worker_crash[exception_thrown1]": _RIDE_OUT.format("TimeoutError"),
}

#: Warnings arq's configuration (``filterwarnings = error``) would turn into failures that come
#: from the versions plantpipe runs with, not from the worker: redis-py 5 deprecates the
#: ``close()`` that arq and its tests call (arq's lock file pins redis-py 4.6, where it is not).
IGNORED_WARNINGS = ("ignore:Call to deprecated close.:DeprecationWarning",)


def _guarded(connect: Any) -> Any:
    """``Connection._connect`` that refuses the shared Redis: arq's fixtures run FLUSHALL."""
    forbidden = {6379}
    shared = os.environ.get("PLANTPIPE_TEST_REDIS_URL")
    if shared:
        forbidden.add(urlsplit(shared).port or 6379)
    forbidden.discard(int(os.environ.get(PORT_ENV, "0")))

    def check(self: Any) -> None:
        if getattr(self, "port", None) in forbidden:
            raise RuntimeError(
                f"arq suite: refusing to connect to port {self.port} (a shared Redis); only "
                f"the private server on port {os.environ.get(PORT_ENV)} may be used"
            )

    if inspect.iscoroutinefunction(connect):

        async def guarded_async(self: Any) -> Any:
            check(self)
            return await connect(self)

        return guarded_async

    def guarded(self: Any) -> Any:
        check(self)
        return connect(self)

    return guarded


class RedisContainer:
    """Stands in for ``testcontainers.redis.RedisContainer``: the private ``redis-server``."""

    port = 6379  # the port inside the container; get_exposed_port maps it to the private one

    def __init__(self, image: str = "redis:latest", **_: Any) -> None:
        self.image = image

    def __enter__(self) -> RedisContainer:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> int:
        return int(os.environ[PORT_ENV])


def _install() -> None:
    if not os.environ.get(PORT_ENV):
        raise pytest.UsageError(f"{PORT_ENV} is not set: run `python -m tests.arq_suite`")
    containers = types.ModuleType("testcontainers")
    containers_redis = types.ModuleType("testcontainers.redis")
    containers_redis.RedisContainer = RedisContainer  # type: ignore[attr-defined]
    containers.redis = containers_redis  # type: ignore[attr-defined]
    sys.modules["testcontainers"] = containers
    sys.modules["testcontainers.redis"] = containers_redis

    for module in (redis.asyncio.connection, redis.connection):
        module.Connection._connect = _guarded(module.Connection._connect)  # type: ignore[method-assign]

    resilient = plantpipe_worker.ResilientWorker
    arq.worker.Worker = resilient  # what arq's create_worker builds, and `from arq.worker import`
    arq.Worker = resilient  # `from arq import Worker`
    plantpipe_worker.install()  # arq's CLI (run and --watch) builds through our create_worker
    plantpipe_worker._ARQ_WORKER = resilient  # … which gives settings without worker_class ours


_install()


def pytest_configure(config: pytest.Config) -> None:
    for line in IGNORED_WARNINGS:  # after arq's own lines, so they take precedence
        config.addinivalue_line("filterwarnings", line)


def pytest_report_header() -> list[str]:
    return [
        f"plantpipe: arq {arq.VERSION}'s tests with arq.Worker = "
        f"{arq.Worker.__module__}.{arq.Worker.__qualname__}, Redis on 127.0.0.1:"
        f"{os.environ[PORT_ENV]}; {len(EXPECTED_TO_DIFFER)} expected to differ",
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen = {item.nodeid for item in items}
    missing = sorted(set(EXPECTED_TO_DIFFER) - seen)
    whole_suite = [os.path.normpath(arg) for arg in config.args] == ["tests"] and not (
        config.getoption("keyword") or config.getoption("markexpr")
    )
    if missing and whole_suite:
        raise pytest.UsageError(
            "arq suite: tests listed in EXPECTED_TO_DIFFER were not collected (renamed or "
            f"removed in this arq version?): {missing}"
        )
    for item in items:
        reason = EXPECTED_TO_DIFFER.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
