"""plantpipe: count plants in nursery photos on an arq job graph over Redis.

The public API, re-exported here (``from pipeline import PipelineClient, Settings``):

- :class:`PipelineClient` — submit photos, follow sessions, upload objects (one, or many as
  :class:`UploadItem`), replay failures; :class:`UploadHandle` follows one upload;
- :class:`Settings` / :func:`get_settings` — every tunable, from ``PLANTPIPE_*``;
- :class:`JoinStore`, :class:`Callback`, :func:`enqueue` — fan-out / fan-in for your own
  jobs (``enqueue`` is arq's ``enqueue_job`` plus a wake-up for plantpipe's workers);
- :class:`ChildReport`, :class:`SessionRecord`, :class:`SessionResult`,
  :class:`SessionEvent` — what the client returns and what children report;
- errors: :class:`PipelineError` and its kinds, :class:`InvalidImage`, :class:`RedisFull`
  (a submit refused while Redis is near ``maxmemory``: retry later).

Names resolve on first use, so ``import pipeline.settings`` alone stays light (the
inference pool's processes import only what they run).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.client import PipelineClient, UploadHandle
    from pipeline.errors import (
        ConfigurationError,
        PermanentError,
        PipelineError,
        TransientError,
        UploadFailed,
    )
    from pipeline.runtime.enqueue import enqueue
    from pipeline.runtime.joins import Callback, JoinStore
    from pipeline.runtime.memory import RedisFull
    from pipeline.schemas import (
        ChildReport,
        SessionEvent,
        SessionRecord,
        SessionResult,
        UploadItem,
    )
    from pipeline.settings import Settings, get_settings
    from pipeline.vision.decode import InvalidImage

_WHERE: dict[str, str] = {
    "PipelineClient": "pipeline.client",
    "UploadHandle": "pipeline.client",
    "Settings": "pipeline.settings",
    "get_settings": "pipeline.settings",
    "JoinStore": "pipeline.runtime.joins",
    "Callback": "pipeline.runtime.joins",
    "enqueue": "pipeline.runtime.enqueue",
    "ChildReport": "pipeline.schemas",
    "SessionEvent": "pipeline.schemas",
    "SessionRecord": "pipeline.schemas",
    "SessionResult": "pipeline.schemas",
    "UploadItem": "pipeline.schemas",
    "PipelineError": "pipeline.errors",
    "PermanentError": "pipeline.errors",
    "TransientError": "pipeline.errors",
    "ConfigurationError": "pipeline.errors",
    "UploadFailed": "pipeline.errors",
    "RedisFull": "pipeline.runtime.memory",
    "InvalidImage": "pipeline.vision.decode",
}

__all__ = [
    "Callback",
    "ChildReport",
    "ConfigurationError",
    "InvalidImage",
    "JoinStore",
    "PermanentError",
    "PipelineClient",
    "PipelineError",
    "RedisFull",
    "SessionEvent",
    "SessionRecord",
    "SessionResult",
    "Settings",
    "TransientError",
    "UploadFailed",
    "UploadHandle",
    "UploadItem",
    "enqueue",
    "get_settings",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
