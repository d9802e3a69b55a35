"""Calls made in the same turn of the event loop, done as one.

``PipelineClient.upload`` called from many tasks at once (a web service's request handlers, a
``gather`` over files) would cost one io job each: one claim, state read, record and finish per
object. :class:`SameTurnBatcher` gathers the items added during one turn of the loop and hands
them to one ``flush`` at the start of the next, so such uploads share io jobs as
``upload_many`` does. A lone call is flushed on the next turn: no timer, no added wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Turn(Generic[T]):
    items: list[T] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SameTurnBatcher(Generic[T]):
    """``await add(item)`` returns once the flush that carried ``item`` has succeeded, or
    raises what it raised (every item of that flush shares its fate: check each item on its
    own before adding it). A caller cancelled while it waits does not take its item back."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]]) -> None:
        self._flush = flush
        self._turn: _Turn[T] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def add(self, item: T) -> None:
        turn = self._turn
        if turn is None:
            turn = self._turn = _Turn()
            asyncio.get_running_loop().call_soon(self._start, turn)
        turn.items.append(item)
        await asyncio.shield(turn.done)

    def _start(self, turn: _Turn[T]) -> None:
        if self._turn is turn:
            self._turn = None
        task = asyncio.ensure_future(self._run(turn))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, turn: _Turn[T]) -> None:
        try:
            await self._flush(turn.items)
        except asyncio.CancelledError:
            turn.done.cancel()
            raise
        except Exception as exc:
            turn.done.set_exception(exc)
            turn.done.exception()  # its waiters re-raise it; if all were cancelled, no warning
        else:
            turn.done.set_result(None)
