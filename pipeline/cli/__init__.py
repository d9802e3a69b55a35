"""plantpipe: count plants in nursery photos (run, submit, status, watch, failed list|retry,
workers, evaluate, dashboard).

Exit codes: 0 ok, 1 processing failed (some or all photos), 2 usage or input error, 3 counts
final but uploads pending ('plantpipe run --resume DIR' finishes them). Every expected
failure is one 'error:' line on stderr saying what to do; --debug adds the traceback.
"""

# (This docstring is the top-level ``--help``.) The package, one module per job:
#   __init__   the typer app, every command's registration, ``main`` (the one error path)
#   errors     exit codes, CliError, explain(): an exception -> one ``error:`` line + code
#   output     stderr/stdout lines, the live progress table, summary, outputs written
#   photos     reading and cheaply validating the photos a command is given
#   connect    one PipelineClient per call, ``--prefix``
#   run        ``plantpipe run``: the embedded end-to-end run
#   workers    ``plantpipe workers``: role processes (also started by ``run``)
#   sessions   ``submit``, ``status``, ``watch``
#   failed     ``failed list|retry``: dead letters
#   evaluate   ``plantpipe evaluate``: glue to pipeline.evaluation
#   dashboard  ``plantpipe dashboard``: glue to pipeline.dashboard (imported when it runs)
# Configuration is read only through pipeline.settings; child processes get theirs from
# Settings.to_env (pipeline.embedded.child_env).

from __future__ import annotations

import inspect
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer

from pipeline.cli import dashboard, evaluate, failed, run, sessions, workers
from pipeline.cli.errors import EXIT_OK, EXIT_USAGE, explain, one_line

__all__ = ["app", "main"]


def flowed(text: str | None) -> str:
    """A docstring as ``--help`` shows it: each paragraph one line, wrapped by the terminal
    (typer keeps the source's line breaks after the first paragraph)."""
    paragraphs = inspect.cleandoc(text or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def command(group: typer.Typer, handler: Callable[..., Any], name: str | None = None) -> None:
    """Register ``handler`` on ``group`` with its docstring flowed as its help."""
    group.command(name, help=flowed(handler.__doc__))(handler)


app = typer.Typer(add_completion=False, no_args_is_help=True, help=flowed(__doc__))
failed_app = typer.Typer(no_args_is_help=True, help="Dead letters: jobs that gave up.")
app.add_typer(failed_app, name="failed")
DEBUG = False


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")] = False,
) -> None:
    """Count plants in nursery photos (arq + Redis, ONNX Runtime, S3)."""
    global DEBUG
    DEBUG = debug


for handler in (
    run.run,
    sessions.submit,
    sessions.status,
    sessions.watch,
    workers.workers,
    evaluate.evaluate,
    dashboard.dashboard,
):
    command(app, handler)
command(failed_app, failed.failed_list, "list")
command(failed_app, failed.failed_retry, "retry")


def _error(message: str, code: int, exc: BaseException | None = None) -> NoReturn:
    if DEBUG and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click runs without its own error printing, so that every failure goes
    through :func:`explain` (one ``error:`` line, the documented exit code)."""
    try:
        rc = app(args=argv, prog_name="plantpipe", standalone_mode=False)
    except BrokenPipeError:  # e.g. `plantpipe failed list | head`
        sys.exit(EXIT_OK)
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # Ctrl-C outside `run` (typer's or click's Abort)
            _error("interrupted", 130, exc)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # usage errors
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
                sys.exit(EXIT_USAGE)
            message = str(exc.format_message())
            if ctx is not None:
                message += f" (see `{ctx.command_path} --help`)"
            _error(message, int(exc.exit_code), exc)
        message, code = explain(exc)
        _error(message, code, exc)
    sys.exit(rc if isinstance(rc, int) else EXIT_OK)
