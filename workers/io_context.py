"""The io role's context: what every upload job of the role shares."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.runtime.budget import ByteBudget
from pipeline.runtime.context import RoleContext
from pipeline.storage import ObjectStore
from pipeline.storage.breaker import RedisCircuitBreaker


@dataclass
class IoContext(RoleContext):
    """The io role's context: the object store, the circuit breaker in front of it and the
    byte budget of the payloads in memory."""

    store: ObjectStore
    breaker: RedisCircuitBreaker
    memory: ByteBudget  # payload bytes this process holds at once (PLANTPIPE_IO_MEMORY_MB)
