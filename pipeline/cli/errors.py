"""The command line's one failure vocabulary: exit codes, :class:`CliError`, and
:func:`explain`, which turns any exception that reaches ``main`` into one ``error:`` line and
its exit code."""

from __future__ import annotations

from redis.exceptions import RedisError

from pipeline.errors import InvalidSettings, PipelineError
from pipeline.runtime.memory import is_out_of_memory
from pipeline.schemas import SessionRecord
from pipeline.settings import Settings, get_settings
from pipeline.vision.decode import InvalidImage

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """An expected failure: printed as one ``error:`` line, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = EXIT_USAGE) -> CliError:
    return CliError(message, code)


def one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def redis_url_hint() -> str:
    """The Redis URL the settings name (the default when the settings themselves are invalid)."""
    try:
        return get_settings().redis_url
    except InvalidSettings:
        return str(Settings.model_fields["redis_url"].default)


def explain(exc: BaseException) -> tuple[str, int]:
    """The ``error:`` line and exit code of an exception that reached the command line."""
    if isinstance(exc, CliError):
        return exc.message, exc.code
    if isinstance(exc, InvalidImage):
        return exc.reason, EXIT_USAGE
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return "timed out (the work goes on; follow it with `plantpipe watch ID`)", EXIT_FAILED
    if is_out_of_memory(exc):
        return (
            f"Redis at {redis_url_hint()} is full (maxmemory reached, it refuses writes): "
            "wait for running sessions to finish, or give Redis more memory",
            EXIT_FAILED,
        )
    if isinstance(exc, RedisError | ConnectionError | OSError):
        return (
            f"cannot reach Redis at {redis_url_hint()} ({one_line(str(exc)) or type(exc).__name__})"
            ": start Redis or point PLANTPIPE_REDIS_URL at a running one",
            EXIT_FAILED,
        )
    if isinstance(exc, PipelineError):
        return exc.reason, EXIT_USAGE if exc.code.startswith("invalid") else EXIT_FAILED
    if isinstance(exc, LookupError):
        return str(exc.args[0]) if exc.args else str(exc), EXIT_USAGE
    if isinstance(exc, ValueError):
        return str(exc), EXIT_USAGE
    return (
        f"unexpected {type(exc).__name__}: {exc} (run `plantpipe --debug ...` for the traceback)",
        EXIT_FAILED,
    )


def exit_code(record: SessionRecord) -> int:
    """1 when processing failed (the session, or any photo of it); a session that is
    ``warning`` only because some photo carries a caveat (e.g. no colour) exits 0."""
    if record.status == "failed" or any(p.state == "failed" for p in record.photos):
        return EXIT_FAILED
    return EXIT_OK if record.status in ("completed", "warning") else EXIT_FAILED
