"""pytest plugin of :mod:`pipeline.testing` (entry point ``pytest11: plantpipe``).

Fixtures: ``plantpipe_overrides`` (override it: a dict of settings), ``plantpipe_settings``,
``plantpipe_workers`` and ``plantpipe_client``. They need pytest-asyncio; without it the
plugin defines nothing (so installing plantpipe never breaks an unrelated pytest run).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipeline.client import PipelineClient
from pipeline.settings import Settings
from pipeline.testing.kit import (
    ServiceUnavailable,
    check_services,
    drop_keys,
    isolated_settings,
    remove_bucket,
    running_workers,
)

try:
    import pytest_asyncio

    HAVE_PYTEST_ASYNCIO = True
except ImportError:  # pragma: no cover - the kit needs pytest-asyncio
    HAVE_PYTEST_ASYNCIO = False

if HAVE_PYTEST_ASYNCIO:

    @pytest.fixture
    def plantpipe_overrides() -> dict[str, Any]:
        """Settings to change for ``plantpipe_settings``; override this fixture."""
        return {}

    @pytest_asyncio.fixture
    async def plantpipe_settings(plantpipe_overrides: dict[str, Any]) -> AsyncIterator[Settings]:
        """Settings isolated for this test (own key prefix, own bucket); cleaned afterwards."""
        settings = isolated_settings(**plantpipe_overrides)
        try:
            await check_services(settings)
        except ServiceUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield settings
        finally:
            await drop_keys(settings)
            await remove_bucket(settings)

    @pytest_asyncio.fixture
    async def plantpipe_workers(plantpipe_settings: Settings) -> AsyncIterator[dict[str, Any]]:
        """io, cpu and gpu workers running in this test's event loop."""
        async with running_workers(plantpipe_settings) as workers:
            yield workers

    @pytest_asyncio.fixture
    async def plantpipe_client(
        plantpipe_settings: Settings, plantpipe_workers: dict[str, Any]
    ) -> AsyncIterator[PipelineClient]:
        """A connected PipelineClient on the running workers."""
        async with PipelineClient(plantpipe_settings) as client:
            yield client
