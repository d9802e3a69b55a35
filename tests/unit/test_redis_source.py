"""Where Redis is typed loosely, and where Lua lives, read from the source (``ast``).

Every ``.py`` under ``pipeline/`` and ``workers/`` is parsed; nothing is imported.

Typed Redis: redis-py's asyncio client is reached through ``typed(redis)`` of
``pipeline/state/redisio.py`` (:data:`ADAPTER`), the one place it is cast. Outside it, each of
these is a failure (:func:`loose_redis`):

- an annotated name or attribute typed ``Any`` (or ``Any | None``, ``Optional[Any]``) whose
  name or assigned value mentions Redis: ``redis``, ``pool``, ``pipe``, ``pipeline(``,
  ``quick_client``, ``open_pool``, ``create_pool`` (``client: Any = self._redis``,
  ``redis: Any = ctx["redis"]``);
- a function parameter typed ``Any`` whose name mentions ``redis``, or is ``pool`` or
  ``pipe`` (``def f(redis: Any)``, ``pipe: Any``);
- ``cast(Any, x)`` where ``x`` mentions one of those words or ``client``;
- ``cast(AsyncRedisClient, ...)`` or ``cast(AsyncRedisPipeline, ...)``: the adapter's cast.

Not caught: an ``Any`` whose names say nothing of Redis (``def f(client: Any)``: the S3 SDK's
clients are such, and stay ``Any``) — name a Redis parameter ``redis``.

Lua: every script is defined in ``pipeline/state/lua/`` (:data:`LIBRARY`). Outside it, a
string holding ``redis.call(`` or ``redis.pcall(`` is a failure, and so is sending a script
any other way than the library's (a call of ``.evalsha``, ``.eval``, ``.register_script`` or
``.script_load`` outside ``pipeline/state/lua/library.py``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("pipeline", "workers")
ADAPTER = "pipeline/state/redisio.py"
LIBRARY = "pipeline/state/lua/"
RUNNER = "pipeline/state/lua/library.py"

REDIS_WORDS = re.compile(
    r"redis|\bpool\b|\bpipe\b|pipeline\(|quick_client|open_pool|create_pool", re.I
)
REDIS_PARAM = re.compile(r"redis|^pool$|^pipe$", re.I)
CAST_WORDS = re.compile(REDIS_WORDS.pattern + r"|\bclient\b", re.I)
ADAPTER_TYPES = {"AsyncRedisClient", "AsyncRedisPipeline"}
LUA = re.compile(r"redis\.p?call\(")
SCRIPT_CALLS = {"evalsha", "eval", "register_script", "script_load"}


def sources() -> Iterator[tuple[str, str]]:
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if "/." in rel or "__pycache__" in rel:
                continue
            yield rel, path.read_text()


def _is_any(node: ast.expr | None) -> bool:
    """``Any``, ``typing.Any``, ``Any | None``, ``Optional[Any]``."""
    if isinstance(node, ast.Name):
        return node.id == "Any"
    if isinstance(node, ast.Attribute):
        return node.attr == "Any"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_any(node.left) or _is_any(node.right)
    if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("Optional"):
        return _is_any(node.slice)
    return False


def loose_redis(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` of each Redis client typed loosely in ``source`` (module docstring)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign) and _is_any(node.annotation):
            text = (
                ast.unparse(node.target) + " = " + (ast.unparse(node.value) if node.value else "")
            )
            if REDIS_WORDS.search(text):
                found.append((node.lineno, f"{text.rstrip(' =')}: typed Any"))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if _is_any(arg.annotation) and REDIS_PARAM.search(arg.arg):
                    found.append((arg.lineno, f"parameter {arg.arg}: Any"))
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).split(".")[-1] == "cast"
            and len(node.args) == 2
        ):
            target, value = node.args
            name = target.value if isinstance(target, ast.Constant) else ast.unparse(target)
            if name in ("Any", "typing.Any") and CAST_WORDS.search(ast.unparse(value)):
                found.append((node.lineno, f"cast(Any, {ast.unparse(value)})"))
            elif str(name).split(".")[-1] in ADAPTER_TYPES:
                found.append((node.lineno, f"cast({name}, ...): only typed() casts"))
    return found


def lua_outside(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` of each Lua script, or script run, in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if LUA.search(node.value):
                found.append((node.lineno, "a Lua script"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SCRIPT_CALLS
        ):
            found.append((node.lineno, f".{node.func.attr}(...)"))
    return found


def test_no_redis_client_is_typed_any_outside_the_adapter() -> None:
    bad = [
        f"{path}:{line}: {what}"
        for path, source in sources()
        if path != ADAPTER
        for line, what in loose_redis(source)
    ]
    assert not bad, (
        "a Redis client typed loosely (use typed(redis) from pipeline.state.redisio, and "
        "declare a missing command on its AsyncRedisClient / AsyncRedisPipeline):\n"
        + "\n".join(bad)
    )


def test_every_lua_script_lives_in_the_library() -> None:
    bad = [
        f"{path}:{line}: {what}"
        for path, source in sources()
        if not path.startswith(LIBRARY)
        for line, what in lua_outside(source)
    ]
    bad += [
        f"{path}:{line}: {what}"
        for path, source in sources()
        if path.startswith(LIBRARY) and path != RUNNER
        for line, what in lua_outside(source)
        if not what.startswith("a Lua")
    ]
    assert not bad, (
        "Lua outside pipeline/state/lua/ (add the script there, as a LuaScript with a typed "
        "wrapper; scripts run through its library):\n" + "\n".join(bad)
    )


@pytest.mark.parametrize(
    "snippet",
    [
        "client: Any = self._redis",
        "redis: Any = client.redis",
        "client: Any = self.pool",
        "client: Any = await quick_client(url)",
        "class C:\n    redis: Any",
        "redis: Any | None = None",
        "redis: Optional[Any] = None",
        "def f(redis: Any) -> None: ...",
        "async def f(self, pipe: Any, kind: str) -> None: ...",
        "def f(*, arq_redis: typing.Any) -> None: ...",
        "x = cast(Any, self._redis)",
        "x = typing.cast('Any', client)",
        "x = cast(AsyncRedisClient, redis)",
    ],
)
def test_the_check_catches(snippet: str) -> None:
    assert loose_redis(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "self._client: Any = None",  # the S3 SDK's client
        "def tune_client(client: Any, settings: Settings) -> None: ...",
        "x = cast(Any, interrupted_retry(job, timeout_s, settings))",
        "info: dict[str, Any] = await typed(redis).info('memory')",
        "client = typed(self._redis)",
        "def f(redis: Redis) -> None: ...",
    ],
)
def test_the_check_passes(snippet: str) -> None:
    assert not loose_redis(snippet), snippet


def test_the_lua_check_catches_scripts_and_script_runs() -> None:
    assert lua_outside('S = """\nreturn redis.call(\'GET\', KEYS[1])\n"""')
    assert lua_outside("x = f'redis.pcall(\"DEL\", {key})'")
    assert lua_outside("await client.evalsha(sha, 1, key)")
    assert lua_outside("s = redis.register_script(source)")
    assert not lua_outside("await client.hget(key, 'state')")
