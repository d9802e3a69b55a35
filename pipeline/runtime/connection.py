"""Redis connection settings for arq from ``PLANTPIPE_REDIS_URL``, with the retry policy that
rides out a Redis restart."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from arq.connections import RedisSettings
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.settings import Settings


def redis_settings(settings: Settings) -> RedisSettings:
    """arq RedisSettings from ``PLANTPIPE_REDIS_URL``.

    Accepts ``redis://``, ``rediss://`` (TLS), ``unix:///path?db=N`` and
    ``redis+sentinel://[:password@]host:port[,host:port]/service_name[/db]``.
    """
    url = settings.redis_url
    common: dict[str, Any] = {
        "conn_timeout": int(max(1, settings.redis_conn_timeout_s)),
        "conn_retries": settings.redis_conn_retries,
        "conn_retry_delay": 1,
        # Ride out a Redis restart: commands *and new connections* retry with backoff (~30 s
        # in all) before the worker gives up. redis-py retries a refused or reset connect
        # only when the builtin ConnectionError is listed: without it a worker's poll loop
        # died the moment Redis was unreachable.
        "retry": RedisRetry(ExponentialBackoff(cap=5.0, base=0.2), retries=10),
        "retry_on_error": [
            RedisConnectionError,
            RedisTimeoutError,
            BusyLoadingError,
            ConnectionError,
        ],
    }
    parsed = urlparse(url)
    if parsed.scheme == "redis+sentinel":
        hosts: list[tuple[str, int]] = []
        netloc = parsed.netloc.rsplit("@", 1)[-1]
        for part in netloc.split(","):
            host, _, port = part.partition(":")
            hosts.append((host, int(port or 26379)))
        path = [p for p in parsed.path.split("/") if p]
        if not path:
            raise ValueError(f"sentinel URL needs a service name: {url!r}")
        password = unquote(parsed.password) if parsed.password else None
        return RedisSettings(
            host=hosts,
            sentinel=True,
            sentinel_master=path[0],
            database=int(path[1]) if len(path) > 1 else 0,
            password=password,
            **common,
        )
    if parsed.scheme == "unix":
        query = parse_qs(parsed.query)
        return RedisSettings(
            unix_socket_path=parsed.path,
            database=int(query.get("db", ["0"])[0]),
            password=unquote(parsed.password) if parsed.password else None,
            **common,
        )
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported Redis URL scheme {parsed.scheme!r} in {url!r}")
    rs = RedisSettings.from_dsn(url)
    for name, value in common.items():
        setattr(rs, name, value)
    if parsed.scheme == "rediss":
        rs.ssl_cert_reqs = "required"
        rs.ssl_check_hostname = True  # a certificate for another host is refused
    return rs


def fail_fast(rs: RedisSettings) -> RedisSettings:
    """The same connection without retries: one attempt, for a quick "is Redis there?"."""
    return dataclasses.replace(rs, retry=None, retry_on_error=None, conn_retries=0)
