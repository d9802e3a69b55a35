"""The rules behind :class:`pipeline.settings.Settings`: the ranges its fields share, the
cross-checks between fields, "0 = auto", the environment a child process gets, and the words
for all of it — the one-line error naming a ``PLANTPIPE_*`` variable, the value and what is
allowed, and README's configuration table (``python -m pipeline.settings --readme
README.md`` rewrites it).

Everything here reads a settings class or its values generically (``model_fields``, a dict),
so this module sits below ``pipeline.settings`` and never imports it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsError

MIB = 1024 * 1024
DAY = 24 * 3600


@dataclass(frozen=True)
class Allowed:
    """Annotation metadata: what a pattern-constrained text allows, in words."""

    text: str


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


# Ranges shared by many fields (a field may narrow them with its own Field(ge=..., le=...)).
Seconds = Annotated[float, Field(gt=0, le=DAY)]
WholeSeconds = Annotated[int, Field(ge=1, le=30 * DAY)]
Count = Annotated[int, Field(ge=1)]
Auto = Annotated[int, Field(ge=0, le=1024)]  # 0 = chosen at start
Share = Annotated[float, Field(gt=0, le=1)]  # a threshold or ratio in (0, 1]
Pixels = Annotated[float, Field(gt=0, le=100_000)]
Side = Annotated[int, Field(ge=32, le=8192, multiple_of=32)]  # a YOLO input side
Bytes = Annotated[int, Field(ge=1, le=5 * 1024 * MIB)]
NonEmpty = Annotated[str, Field(min_length=1)]
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]
RedisUrl = Annotated[
    str,
    Field(pattern=r"^(redis|rediss|unix|redis\+sentinel)://\S+$"),
    Allowed("a redis://, rediss://, unix:// or redis+sentinel:// URL"),
]
HttpUrl = Annotated[str, Field(pattern=r"^https?://\S+$"), Allowed("an http:// or https:// URL")]
KeyPrefix = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
    Allowed("1 to 64 letters, digits, '_', '.' or '-' (no ':' or '*'), not starting with a sign"),
]
BucketName = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
    Allowed("an S3 bucket name: 3 to 63 lowercase letters, digits, '.' or '-'"),
]
Region = Annotated[
    str, Field(pattern=r"^[a-z0-9-]{2,32}$"), Allowed("a region name such as us-east-1")
]
Provider = Annotated[
    str,
    Field(pattern=r"^\w+ExecutionProvider$"),
    Allowed("ONNX Runtime provider names such as CPUExecutionProvider"),
]


# --- cross-checks, "0 = auto", the child's environment -----------------------------------


def cross_check_problems(v: Mapping[str, Any]) -> list[str]:
    """What is wrong between settings ``v`` (field name -> value), one sentence each, naming
    every variable involved and why they must agree."""
    deadline = v["session_deadline_s"]
    checks: list[tuple[bool, str]] = [
        (
            v["session_ttl_s"] > deadline,
            f"PLANTPIPE_SESSION_TTL_S ({v['session_ttl_s']}) must be longer than "
            f"PLANTPIPE_SESSION_DEADLINE_S ({deadline}): a session's records would expire "
            "before the watchdog could end it",
        ),
        (
            v["blob_ttl_s"] >= deadline,
            f"PLANTPIPE_BLOB_TTL_S ({v['blob_ttl_s']}) must be at least "
            f"PLANTPIPE_SESSION_DEADLINE_S ({deadline}): a photo's bytes would expire while its "
            "session may still need them",
        ),
        *(
            (
                v[name] < deadline,
                f"PLANTPIPE_{name.upper()} ({v[name]}) must be shorter than "
                f"PLANTPIPE_SESSION_DEADLINE_S ({deadline}): one try of the job would outlast "
                "its session",
            )
            for name in ("io_job_timeout_s", "cpu_job_timeout_s", "gpu_job_timeout_s")
        ),
        (
            v["max_upload_bytes"] <= v["max_blob_bytes"],
            f"PLANTPIPE_MAX_UPLOAD_BYTES ({v['max_upload_bytes']}) must not exceed "
            f"PLANTPIPE_MAX_BLOB_BYTES ({v['max_blob_bytes']}): an accepted photo could not be "
            "stored",
        ),
        (
            v["rescale_min_px"] < v["rescale_max_px"]
            and v["rescale_min_px"]
            <= min(v["rescale_small_target_px"], v["rescale_large_target_px"])
            and max(v["rescale_small_target_px"], v["rescale_large_target_px"])
            <= v["rescale_max_px"],
            f"PLANTPIPE_RESCALE_MIN_PX ({v['rescale_min_px']}) must be below "
            f"PLANTPIPE_RESCALE_MAX_PX ({v['rescale_max_px']}), with "
            f"PLANTPIPE_RESCALE_SMALL_TARGET_PX ({v['rescale_small_target_px']}) and "
            f"PLANTPIPE_RESCALE_LARGE_TARGET_PX ({v['rescale_large_target_px']}) between them: "
            "slices rescaled to a target outside the range would be rescaled again",
        ),
        (
            v["s3_sse_kms_key_id"] is None or v["s3_sse"] == "aws:kms",
            "PLANTPIPE_S3_SSE_KMS_KEY_ID is set but PLANTPIPE_S3_SSE is not 'aws:kms': set "
            "PLANTPIPE_S3_SSE=aws:kms or drop the key id",
        ),
    ]
    return [message for ok, message in checks if not ok]


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def resolve_auto(v: Mapping[str, Any], given: frozenset[str] | set[str]) -> dict[str, Any]:
    """The values "0 = auto" stands for in ``pool_processes``, ``intra_op_threads`` and
    ``gpu_max_jobs`` (only those that are 0); and the default ``providers`` without CUDA when
    onnxruntime-gpu is not installed (a CPU build has no CUDA to fall back from: asking for it
    would only log a fallback warning on every start). ``given``: the fields set explicitly."""
    cores = max(1, os.cpu_count() or 1)
    gpu_build = _installed("onnxruntime-gpu")
    on_gpu = "CUDAExecutionProvider" in v["providers"] and gpu_build
    pool = v["pool_processes"]
    resolved: dict[str, Any] = {}
    if "providers" not in given and not gpu_build:
        resolved["providers"] = [p for p in v["providers"] if p != "CUDAExecutionProvider"]
    if pool == 0:
        # CPU inference: separate single-threaded processes use the cores better than one
        # process whose threads synchronise per operator (bench/RESULTS.md §6).
        pool = resolved["pool_processes"] = max(1, len(v["device_ids"])) if on_gpu else cores
    if v["intra_op_threads"] == 0 and not on_gpu and pool > 1:
        resolved["intra_op_threads"] = max(1, cores // pool)
    if v["gpu_max_jobs"] == 0:
        resolved["gpu_max_jobs"] = pool + 1
    return resolved


def variable(model: type[BaseSettings], name: str) -> str:
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def settings_env(settings: BaseSettings, inherit: Mapping[str, str] | None) -> dict[str, str]:
    """The environment of a child process whose settings are ``settings``.

    ``inherit`` (e.g. ``os.environ``) passes through, less every variable a field reads (any
    case); then each field ``settings`` was given — by the environment or as an argument,
    ``model_fields_set`` — is written as its variable the way the environment gives it (JSON
    for lists and numbers, ``true``/``false``). Fields not given stay out, so the child
    resolves "0 = auto" itself. ``None`` is left out where it is the default, else written
    ``null`` (``env_parse_none_str``)."""
    model = type(settings)
    names = {name: variable(model, name) for name in model.model_fields}
    taken = set(names.values())
    env = {k: v for k, v in (inherit or {}).items() if k.upper() not in taken}
    for name, value in settings.model_dump(mode="json", include=settings.model_fields_set).items():
        if value is None and model.model_fields[name].default is None:
            continue  # unset is None
        env[names[name]] = "null" if value is None else _env_text(value)
    return env


# --- what a field allows, in words -------------------------------------------------------


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value) if isinstance(value, int) else f"{value:g}"


def _constraints(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """The bare type and every constraint of ``annotation`` plus ``metadata``."""
    found = list(metadata)
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            found.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return annotation, found


def _range(kind: str, constraints: list[Any]) -> str:
    bounds: dict[str, list[float]] = {"≥": [], ">": [], "≤": [], "<": []}
    for c in constraints:
        for cls, sign, attr in (
            (at.Ge, "≥", "ge"),
            (at.Gt, ">", "gt"),
            (at.Le, "≤", "le"),
            (at.Lt, "<", "lt"),
        ):
            if isinstance(c, cls):
                bounds[sign].append(float(getattr(c, attr)))
    lows = [(v, s) for s in ("≥", ">") for v in bounds[s]]
    highs = [(v, s) for s in ("≤", "<") for v in bounds[s]]
    low = max(lows, key=lambda b: (b[0], b[1] == ">"), default=None)
    high = min(highs, key=lambda b: (b[0], b[1] != "<"), default=None)
    if low and high and low[1] == "≥" and high[1] == "≤":
        text = f"{kind} from {_number(low[0])} to {_number(high[0])}"
    else:
        parts = [f"{b[1]} {_number(b[0])}" for b in (low, high) if b is not None]
        text = f"{kind} {' and '.join(parts)}" if parts else kind
    steps: list[Any] = [c.multiple_of for c in constraints if isinstance(c, at.MultipleOf)]
    step = float(steps[0]) if steps else 0.0
    return text + (f", a multiple of {_number(step)}" if step else "")


def _describe(annotation: Any, constraints: list[Any]) -> str:
    annotation, constraints = _constraints(annotation, constraints)
    words = next((c.text for c in constraints if isinstance(c, Allowed)), None)
    if words:
        return words
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a, constraints) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is list:
        item = _describe(args[0], [])
        lengths = [c for c in constraints if isinstance(c, at.MinLen | at.MaxLen)]
        size = " and ".join(
            f"at least {c.min_length}" if isinstance(c, at.MinLen) else f"at most {c.max_length}"
            for c in lengths
        )
        return f"a JSON list ({size} items), each {item}" if size else f"a JSON list, each {item}"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return _range("a whole number", constraints)
    if annotation is float:
        return _range("a number", constraints)
    if annotation is Path:
        return "a file path"
    least = max((c.min_length for c in constraints if isinstance(c, at.MinLen)), default=0)
    if least > 1:
        return f"a text of at least {least} characters"
    return "a non-empty text" if least else "any text"


def allowed(field: FieldInfo) -> str:
    """What ``field`` accepts, in words (its type, range, set of values or pattern)."""
    text = _describe(field.annotation, list(field.metadata))
    if type(None) in typing.get_args(field.annotation):
        text += ", or null" if field.default is not None else "; unset = none"
    return text


# --- the one-line error ------------------------------------------------------------------


def _raw(model: type[BaseSettings], name: str, given: Mapping[str, Any]) -> str:
    """The value as the user gave it: the argument, else the environment variable."""
    if name in given:
        return repr(given[name])
    var = variable(model, name)
    raw = next((v for k, v in os.environ.items() if k.upper() == var), None)
    return repr(raw) if raw is not None else "(unset)"


def _problems(
    model: type[BaseSettings], exc: ValidationError | SettingsError, given: Mapping[str, Any]
) -> Iterator[str]:
    if isinstance(exc, SettingsError):  # a list or other JSON value that is not JSON
        match = re.search(r'field "(\w+)"', str(exc))
        if match is None or match[1] not in model.model_fields:
            yield str(exc)
            return
        name = match[1]
        example = json.dumps(model.model_fields[name].get_default(call_default_factory=True))
        yield (
            f"{variable(model, name)}={_raw(model, name, given)} is not valid JSON: allowed is "
            f"{allowed(model.model_fields[name])}, e.g. '{example}'"
        )
        return
    reported: set[str] = set()
    for error in exc.errors():
        loc = error.get("loc") or ()
        name = str(loc[0]) if loc else ""
        if name not in model.model_fields:  # a cross-check: its message says it all
            yield re.sub(r"^Value error, ", "", str(error.get("msg", "")))
            continue
        if name in reported:
            continue
        reported.add(name)
        yield (
            f"{variable(model, name)}={_raw(model, name, given)} is not allowed: it must be "
            f"{allowed(model.model_fields[name])}"
        )


def explain_settings_error(
    model: type[BaseSettings], exc: ValidationError | SettingsError, given: Mapping[str, Any]
) -> str:
    """One line for everything wrong in one attempt to build ``model`` (``given``: the
    arguments it was built with; the rest came from the environment)."""
    return "invalid settings: " + "; ".join(_problems(model, exc, given))


# --- README's table ----------------------------------------------------------------------

TABLE_START, TABLE_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def _env_text(value: Any) -> str:
    """A value the way the environment gives it."""
    return value if isinstance(value, str) else json.dumps(value)


def markdown_table(model: type[BaseSettings]) -> str:
    """The configuration table of README.md: variable, default, what is allowed, meaning."""
    rows = ["| variable | default | allowed | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "—" if default is None else f"`{_env_text(default)}`"
        rows.append(
            f"| `{variable(model, name)}` | {shown} | {allowed(field)} | "
            f"{field.description or ''} |"
        )
    return "\n".join(rows)


def write_readme_table(readme: Path, model: type[BaseSettings]) -> bool:
    """Rewrite the table between README's markers; True when it changed."""
    text = readme.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    new = f"{text[:start]}\n{markdown_table(model)}\n{text[end:]}"
    if new != text:
        readme.write_text(new)
    return new != text


def readme_main(model: type[BaseSettings], argv: list[str] | None = None) -> None:
    """``python -m pipeline.settings``: print the table; ``--readme README.md`` rewrites it."""
    parser = argparse.ArgumentParser(description="README's configuration table")
    parser.add_argument("--readme", type=Path, help="rewrite the table in this README.md")
    args = parser.parse_args(argv)
    if args.readme is None:
        print(markdown_table(model))
    else:
        changed = write_readme_table(args.readme, model)
        print(f"{args.readme}: table {'rewritten' if changed else 'already up to date'}")
