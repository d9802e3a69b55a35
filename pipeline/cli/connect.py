"""How a client command reaches Redis: one :class:`PipelineClient` for one call, on the
configured key prefix or the one ``--prefix`` names."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from pipeline.client import PipelineClient
from pipeline.settings import Settings, get_settings

T = TypeVar("T")

PrefixOption = Annotated[
    str | None,
    typer.Option(
        "--prefix",
        help="key prefix to look under (default PLANTPIPE_KEY_PREFIX), e.g. the "
        "plantpipe-run-… prefix a failed `plantpipe run` printed",
    ),
]


def client_call(fn: Callable[[PipelineClient], Awaitable[T]], prefix: str | None = None) -> T:
    """Run ``fn`` with a connected client (``prefix`` in place of the configured one)."""

    async def runner() -> T:
        settings = get_settings() if prefix is None else Settings(key_prefix=prefix)
        async with PipelineClient.from_settings(settings) as client:
            return await fn(client)

    return asyncio.run(runner())
