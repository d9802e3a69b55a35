"""The typed Redis adapter (``pipeline/state/redisio.py``) against redis-py itself.

``typed(redis)`` is a ``cast``: nothing checks at run time that the commands
``AsyncRedisClient`` and ``AsyncRedisPipeline`` declare are the ones redis-py's asyncio client
and pipeline have. This does: every declared command exists there, and its parameters are
redis-py's own, by name and position (a call type-checked against the adapter is then a
call redis-py takes).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from pipeline.state.redisio import AsyncRedisClient, AsyncRedisPipeline

#: Protocol methods that describe the object, not a command.
PLUMBING = {"__aenter__", "__aexit__"}


def declared(protocol: type) -> Iterator[tuple[str, Callable[..., Any]]]:
    for name, member in vars(protocol).items():
        if callable(member) and (not name.startswith("_") or name in PLUMBING):
            yield name, member


def _positional(sig: inspect.Signature) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in sig.parameters.values() if p.kind in kinds]


def _has(sig: inspect.Signature, kind: inspect._ParameterKind) -> bool:
    return any(p.kind == kind for p in sig.parameters.values())


CASES = [
    *((AsyncRedisClient, Redis, name, member) for name, member in declared(AsyncRedisClient)),
    *(
        (AsyncRedisPipeline, Pipeline, name, member)
        for name, member in declared(AsyncRedisPipeline)
    ),
]


@pytest.mark.parametrize(
    ("protocol", "real", "name", "member"),
    CASES,
    ids=[f"{protocol.__name__}.{name}" for protocol, _, name, _ in CASES],
)
def test_each_declared_command_is_redis_pys_own(
    protocol: type, real: type, name: str, member: Callable[..., Any]
) -> None:
    target = getattr(real, name, None)
    assert target is not None, f"{real.__name__} has no {name} ({protocol.__name__} declares it)"
    ours, theirs = inspect.signature(member), inspect.signature(target)
    mine = _positional(ours)
    assert _positional(theirs)[: len(mine)] == mine, (
        f"{protocol.__name__}.{name}{ours} does not match redis-py's {name}{theirs}"
    )
    if _has(ours, inspect.Parameter.VAR_POSITIONAL):
        assert _has(theirs, inspect.Parameter.VAR_POSITIONAL), f"redis-py's {name} takes no *args"
    for param in ours.parameters.values():
        if param.kind == inspect.Parameter.KEYWORD_ONLY:
            assert param.name in theirs.parameters or _has(theirs, inspect.Parameter.VAR_KEYWORD), (
                f"redis-py's {name} takes no {param.name}="
            )


def test_the_adapter_declares_what_the_code_sends() -> None:
    """A sample of the commands the stores send: a protocol emptied by mistake fails here."""
    client = {name for name, _ in declared(AsyncRedisClient)}
    pipeline = {name for name, _ in declared(AsyncRedisPipeline)}
    assert {"hget", "hgetall", "hmget", "xread", "zrangebyscore", "blpop", "evalsha"} <= client
    assert {"hset", "xadd", "zadd", "expire", "evalsha", "execute"} <= pipeline
