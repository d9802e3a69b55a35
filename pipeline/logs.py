"""Structured logging: one JSON line per event, with session and job ids bound by context."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from pipeline.settings import Settings

_configured = False


def configure_logging(settings: Settings, *, role: str | None = None) -> None:
    """Route stdlib and structlog records through one renderer (JSON by default)."""
    global _configured
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_logger_name,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            # Drop a record below the level first, before any processor spends time on it
            # (the io worker logs a line per upload at INFO).
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "aiobotocore", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # arq's CLI gives its logger its own plain-text handler at INFO: route it through ours
    # instead (structured, one line per event). Its two INFO lines per job repeat what our
    # jobs log themselves, so they show only at DEBUG; its warnings and errors always show.
    arq_logger = logging.getLogger("arq")
    arq_logger.handlers[:] = []
    arq_logger.propagate = True
    arq_logger.setLevel(logging.DEBUG if level <= logging.DEBUG else max(level, logging.WARNING))
    if role:
        structlog.contextvars.bind_contextvars(role=role)
    _configured = True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def logging_configured() -> bool:
    """Whether :func:`configure_logging` ran in this process."""
    return _configured
