"""A byte budget: at most ``capacity`` bytes held at once by the tasks of one process.

The io role holds each blob's bytes under it from the moment they are read from Redis until
the S3 request that sends them has finished, so the memory an io process spends on payloads
is bounded whatever the backlog (``PLANTPIPE_IO_MEMORY_MB``). Waiters are served first come,
first served (a large request is not starved by a stream of small ones); a request larger
than the whole budget waits until nothing else is held and then runs alone. Cancellation is
safe at every point: a cancelled waiter never leaks what it was granted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a byte budget needs a capacity of at least 1 byte, got {capacity}")
        self.capacity = capacity
        self.held = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def granted(self, n: int) -> int:
        """What a request for ``n`` bytes holds: ``n``, at most the whole budget."""
        return max(0, min(n, self.capacity))

    def try_acquire(self, n: int) -> bool:
        """Take ``n`` bytes now if they are free and nobody waits before us; never waits."""
        n = self.granted(n)
        if self._waiters or self.held + n > self.capacity:
            return False
        self.held += n
        return True

    async def acquire(self, n: int) -> None:
        """Take ``n`` bytes, waiting (in arrival order) until they are free."""
        if self.try_acquire(n):
            return
        n = self.granted(n)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            else:
                with contextlib.suppress(ValueError):  # _wake may have dropped it already
                    self._waiters.remove(entry)
                self._wake()  # we may have been the one blocking those behind us
            raise

    def release(self, n: int) -> None:
        """Give back ``n`` bytes (as acquired) and wake those waiting that now fit."""
        self.held -= self.granted(n)
        if self.held < 0:
            raise RuntimeError("byte budget released more than was acquired")
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, future = self._waiters[0]
            if future.done():  # cancelled, its task not yet resumed to take itself out
                self._waiters.popleft()
                continue
            if self.held + n > self.capacity:
                return
            self._waiters.popleft()
            self.held += n
            future.set_result(None)

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        """``n`` bytes held for the block."""
        await self.acquire(n)
        try:
            yield
        finally:
            self.release(n)
