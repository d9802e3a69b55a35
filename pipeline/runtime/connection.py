"""Redis connections from ``PLANTPIPE_REDIS_URL``, with the retry policy that rides out a Redis
restart or a Sentinel failover: :func:`redis_settings` for arq, :func:`open_pool` to connect."""

from __future__ import annotations

import asyncio
import dataclasses
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name as arq_default_queue
from arq.constants import expires_extra_ms as arq_expires_extra_ms
from arq.jobs import Deserializer, Serializer
from redis.asyncio.retry import Retry as RedisRetry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.settings import Settings


@dataclasses.dataclass
class SentinelRedisSettings(RedisSettings):
    """arq's settings for a Sentinel-managed master, plus the Sentinels' own password
    (``?sentinel_password=`` in the URL; the URL's password is the data nodes')."""

    sentinel_password: str | None = None


def redis_settings(settings: Settings) -> RedisSettings:
    """arq RedisSettings from ``PLANTPIPE_REDIS_URL`` (see :func:`url_settings`)."""
    return url_settings(
        settings.redis_url,
        conn_timeout_s=settings.redis_conn_timeout_s,
        conn_retries=settings.redis_conn_retries,
        ride_out_s=settings.redis_ride_out_s,
    )


BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0


def ride_out(seconds: float) -> RedisRetry:
    """A retry policy whose backoff (0.4 s, doubling, at most 5 s apart) adds up to at least
    ``seconds``: how long a command waits for Redis to come back before it fails."""
    backoff = ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S)
    retries, waited = 0, 0.0
    while waited < seconds:
        retries += 1
        waited += backoff.compute(retries)
    return RedisRetry(backoff, retries=retries)


def url_settings(
    url: str, *, conn_timeout_s: float = 5.0, conn_retries: int = 5, ride_out_s: float = 30.0
) -> RedisSettings:
    """arq RedisSettings from a Redis URL.

    Accepts ``redis://``, ``rediss://`` (TLS), ``unix:///path?db=N`` and
    ``redis+sentinel://[:password@]host:port[,host:port]/service_name[/db]
    [?sentinel_password=...]`` (open with :func:`open_pool`: arq's own Sentinel client keeps
    neither the retry policy nor the timeouts).
    """
    common: dict[str, Any] = {
        "conn_timeout": int(max(1, conn_timeout_s)),
        "conn_retries": conn_retries,
        "conn_retry_delay": 1,
        # Ride out a Redis restart or failover: commands *and new connections* retry with
        # backoff (ride_out_s in all) before they fail. redis-py retries a refused or reset connect
        # only when the builtin ConnectionError is listed: without it a worker's poll loop
        # died the moment Redis was unreachable.
        "retry": ride_out(ride_out_s),
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
        sentinel_password = parse_qs(parsed.query).get("sentinel_password", [None])[0]
        return SentinelRedisSettings(
            host=hosts,
            sentinel=True,
            sentinel_master=path[0],
            database=int(path[1]) if len(path) > 1 else 0,
            password=password,
            sentinel_password=sentinel_password,
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


NO_REPLAY: ContextVar[bool] = ContextVar("plantpipe_no_replay", default=False)
"""True while a job's own work runs under Sentinel (``pipeline.runtime.job``): a command whose
answer a failover cut off raises :class:`CommandOutcomeUnknown` there instead of being sent
again to the new master."""


class CommandOutcomeUnknown(BaseException):
    """A command was sent to the Redis master and its connection broke before the answer came
    back (the master died in a failover): it may or may not have been applied, and if it was,
    the promoted replica may not hold it.

    redis-py's retry would send it again to the new master — where the writes acknowledged just
    before it may be missing: a blob released while the records written before the release
    were lost (the new master would no longer hold a prefix of the old one's history). A job
    instead stops there and runs again as a whole (``kept_through_failover``); every job is
    idempotent. A ``BaseException``, so the job's own ``except Exception`` handlers (which
    would retry one step, record a failure or dead-letter it) let it through to that re-run."""


class FailoverConnection(SentinelManagedConnection):
    """A connection to the master the Sentinels name that tries each address they give once:
    the retry policy around it asks them again before the next try. (redis-py's own retries
    the first address it was given with the whole policy — about 30 s at a dead master while
    the Sentinels already named its successor.) Inside a job (``NO_REPLAY``), a command whose
    answer never came raises :class:`CommandOutcomeUnknown` rather than being replayed."""

    _connecting = False

    async def connect_to(self, address: tuple[str, int]) -> None:
        policy = self.retry
        self.retry = RedisRetry(NoBackoff(), 0)
        self._connecting = True
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self.retry = policy
            self._connecting = False

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            refused = isinstance(exc.__context__, ReadOnlyError)  # not applied: retry is safe
            if self._connecting or refused or not NO_REPLAY.get():
                raise
            raise CommandOutcomeUnknown(
                f"the connection to the Redis master broke before a command's answer ({exc})"
            ) from exc


def _sentinel_master(rs: RedisSettings) -> ArqRedis:
    """A client of the master the Sentinels name, asked again on every new connection, with
    the retry policy and timeouts of ``rs``: during a failover a command waits (retrying its
    connection) until the Sentinels name the new master, instead of failing at once.
    Connections to a master that became a replica are dropped on its READONLY answer."""
    assert isinstance(rs.host, list)
    sentinel_password = rs.sentinel_password if isinstance(rs, SentinelRedisSettings) else None
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        rs.host,
        sentinel_kwargs={
            "password": sentinel_password,
            "socket_connect_timeout": rs.conn_timeout,
            "socket_timeout": rs.conn_timeout,
        },
        socket_connect_timeout=rs.conn_timeout,
        retry=rs.retry,
        retry_on_error=rs.retry_on_error,
    )
    master = sentinel.master_for(
        rs.sentinel_master,
        redis_class=ArqRedis,
        db=rs.database,
        username=rs.username,
        password=rs.password,
        encoding="utf8",
        connection_class=FailoverConnection,
    )
    assert isinstance(master, ArqRedis)
    return master


async def open_pool(
    rs: RedisSettings,
    *,
    job_serializer: Serializer | None = None,
    job_deserializer: Deserializer | None = None,
    default_queue_name: str = arq_default_queue,
    expires_extra_ms: int = arq_expires_extra_ms,
) -> ArqRedis:
    """arq's ``create_pool`` for every URL ``redis_settings`` accepts; for Sentinel our own
    client (see :func:`_sentinel_master`), tried ``conn_retries`` times like arq's."""
    if not rs.sentinel:
        return await create_pool(
            rs,
            job_serializer=job_serializer,
            job_deserializer=job_deserializer,
            default_queue_name=default_queue_name,
            expires_extra_ms=expires_extra_ms,
        )
    tries = 0
    while True:
        pool = _sentinel_master(rs)
        pool.job_serializer = job_serializer
        pool.job_deserializer = job_deserializer
        pool.default_queue_name = default_queue_name
        pool.expires_extra_ms = expires_extra_ms
        try:
            await pool.ping()
        except Exception:
            await pool.aclose()
            if tries >= rs.conn_retries:
                raise
            tries += 1
            await asyncio.sleep(rs.conn_retry_delay)
        else:
            return pool


async def quick_client(url: str, *, timeout_s: float = 2.0) -> ArqRedis:
    """A client of ``url`` (any URL :func:`url_settings` accepts) that tries once and waits
    at most ``timeout_s`` for a connection: for "is Redis there?" and short chores."""
    rs = fail_fast(url_settings(url, conn_timeout_s=timeout_s, conn_retries=0))
    return await open_pool(rs)
