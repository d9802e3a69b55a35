"""``plantpipe`` command: run, submit, status, watch, failed list|retry, workers, evaluate.

Exit codes: 0 ok, 1 processing failed (some or all photos), 2 usage or input error. Every
expected failure is one ``error:`` line on stderr saying what to do; ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.client import PipelineClient
from pipeline.embedded import (
    ROLES,
    PrivateRedis,
    RoleProcesses,
    child_env,
    drop_prefix,
    redis_usable,
)
from pipeline.errors import PipelineError
from pipeline.schemas import SessionRecord, SessionResult
from pipeline.settings import Settings, get_settings
from pipeline.vision.decode import InvalidImage, validate_upload

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
failed_app = typer.Typer(no_args_is_help=True, help="Dead letters: jobs that gave up.")
app.add_typer(failed_app, name="failed")
console = Console(stderr=True)
out = Console()

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                 ".webp": "image/webp"}  # fmt: skip
SAMPLE = Path(__file__).resolve().parent / "samples" / "nursery.jpg"
DEFAULT_OUT = Path("plantpipe-out")
STOP_GRACE_S = 15.0  # workers get this long to finish or hand back their jobs, then SIGKILL
DEBUG = False
T = TypeVar("T")


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
    return os.environ.get("PLANTPIPE_REDIS_URL", str(Settings.model_fields["redis_url"].default))


def explain(exc: BaseException) -> tuple[str, int]:
    """The ``error:`` line and exit code of an exception that reached the command line."""
    if isinstance(exc, CliError):
        return exc.message, exc.code
    if isinstance(exc, InvalidImage):
        return exc.reason, EXIT_USAGE
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return "timed out (the work goes on; follow it with `plantpipe watch ID`)", EXIT_FAILED
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


def say(message: str) -> None:
    """A status line on stderr, never wrapped (paths stay copyable)."""
    console.print(message, soft_wrap=True, highlight=False, markup=False)


def emit(line: str) -> None:
    """A result line on stdout: plain text, never wrapped, for scripts."""
    print(line, flush=True)


def read_photos(paths: list[Path], max_bytes: int) -> tuple[list[bytes], list[str | None]]:
    """Read and cheaply validate every photo (before any worker starts)."""
    datas: list[bytes] = []
    types: list[str | None] = []
    for path in paths:
        if path.is_dir():
            raise fail(f"{path}: is a directory; pass photo files (JPEG, PNG or WebP)")
        if not path.is_file():
            raise fail(f"{path}: no such file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise fail(f"{path}: cannot read it ({exc.strerror})") from exc
        declared = CONTENT_TYPES.get(path.suffix.lower())
        try:
            validate_upload(data, declared, max_bytes)
        except InvalidImage as exc:
            raise fail(f"{path}: {exc.reason}") from exc
        datas.append(data)
        types.append(declared)
    return datas, types


def exit_code(record: SessionRecord) -> int:
    """1 when processing failed (the session, or any photo of it); a session that is
    ``warning`` only because some photo carries a caveat (e.g. no colour) exits 0."""
    if record.status == "failed" or any(p.state == "failed" for p in record.photos):
        return EXIT_FAILED
    return EXIT_OK if record.status in ("completed", "warning") else EXIT_FAILED


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")] = False,
) -> None:
    """Count plants in nursery photos (arq + Redis, ONNX Runtime, S3)."""
    global DEBUG
    DEBUG = debug


# --- progress display ----------------------------------------------------------------


def progress_table(record: SessionRecord, names: list[str], started: float) -> Table:
    title = (
        f"session {record.session_id[:12]}… · {record.status} · stage {record.stage} · "
        f"uploads {record.artifacts_uploaded}/{len(record.artifacts)} · "
        f"{time.monotonic() - started:.1f}s"
    )
    table = Table(title=title, title_justify="left")
    for column in ("#", "photo", "state", "detected", "estimated", "note"):
        table.add_column(column)
    for photo in record.photos:
        table.add_row(
            str(photo.index),
            names[photo.index] if photo.index < len(names) else "",
            photo.state,
            "" if photo.detected is None else str(photo.detected),
            "" if photo.estimated is None else str(photo.estimated),
            photo.reason or "",
        )
    return table


def summary_table(result: SessionResult, names: list[str], elapsed: float) -> Table:
    table = Table(title=f"{result.status.upper()} in {elapsed:.1f}s", title_justify="left")
    for column in ("#", "photo", "segments", "detected", "estimated", "confidence", "time"):
        table.add_column(column, justify="right" if column != "photo" else "left")
    for photo in result.photos:
        segments = len(photo.analysis.segments) if photo.analysis else 0
        total_ms = photo.timings_ms.get("total", sum(photo.timings_ms.values()))
        table.add_row(
            str(photo.index),
            names[photo.index] if photo.index < len(names) else "",
            str(segments) if photo.status == "done" else "-",
            str(photo.detected) if photo.status == "done" else "failed",
            str(photo.estimated) if photo.status == "done" else (photo.error_code or ""),
            f"{photo.avg_confidence:.2f}" if photo.avg_confidence is not None else "-",
            f"{total_ms / 1000:.2f}s",
        )
    conf = f"{result.avg_confidence:.2f}" if result.avg_confidence is not None else "-"
    table.add_row(
        "", "TOTAL", "", str(result.total_detected), str(result.total_estimated), conf, ""
    )
    return table


async def follow_session(
    client: PipelineClient, session_id: str, names: list[str], timeout: float
) -> SessionRecord:
    """Live table until the session is terminal and its artifacts have settled."""
    started = time.monotonic()
    record = await client.status(session_id)
    with Live(progress_table(record, names, started), console=console, transient=False) as live:
        try:
            async with asyncio.timeout(timeout):
                async for _event in client.events(session_id, artifacts=True):
                    record = await client.status(session_id)
                    live.update(progress_table(record, names, started))
                record = await client.status(session_id)
                live.update(progress_table(record, names, started))
        except TimeoutError:
            raise fail(
                f"session {session_id} not finished within {timeout:.0f} s (status "
                f"{record.status}, stage {record.stage}); it goes on: `plantpipe watch "
                f"{session_id}`",
                EXIT_FAILED,
            ) from None
        finally:
            if not console.is_terminal:
                live.stop()
                console.line()  # rich leaves the last render without a newline off a terminal
    return record


# --- run: the main job ----------------------------------------------------------------


def choose_storage(out_dir: Path | None, base: Settings) -> tuple[str, Path | None, str]:
    """``(storage, local folder or None, why)``: ``--out`` wins over the environment; without
    it the environment decides (PLANTPIPE_STORAGE, else S3 when a bucket or endpoint is set),
    else the default folder."""
    env = os.environ
    if out_dir is not None:
        folder = out_dir.resolve()
        return str(folder), folder, "--out"
    if "PLANTPIPE_STORAGE" in env:
        if base.storage.lower() == "s3":
            return "s3", None, "PLANTPIPE_STORAGE=s3"
        folder = Path(base.storage).resolve()
        return str(folder), folder, "PLANTPIPE_STORAGE"
    if any(k in env for k in ("PLANTPIPE_S3_BUCKET", "PLANTPIPE_S3_ENDPOINT_URL")):
        return "s3", None, "PLANTPIPE_S3_BUCKET/PLANTPIPE_S3_ENDPOINT_URL are set"
    folder = DEFAULT_OUT.resolve()
    return str(folder), folder, "default; --out DIR to choose"


class Stopper:
    """SIGINT/SIGTERM during ``run``: the first cancels the run and says what it waits for;
    a second one kills the workers at once (never leaving one behind)."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.signum: int | None = None
        self.force = asyncio.Event()

    def __call__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            say(
                f"{name}: stopping — waiting up to {STOP_GRACE_S:.0f} s for the io, cpu and gpu "
                "workers to finish or hand back their jobs, then the private Redis; "
                "press Ctrl-C again to kill them now"
            )
            self.task.cancel()
        else:
            say(f"{name} again: killing the workers now")
            self.force.set()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self, sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(
    datas: list[bytes],
    types: list[str | None],
    names: list[str],
    out_opt: Path | None,
    timeout: float,
) -> int:
    base = get_settings()
    task = asyncio.current_task()
    assert task is not None
    stopper = Stopper(task)
    stopper.install()
    storage, folder, why = choose_storage(out_opt, base)
    if folder is None:
        say(f"outputs: s3://{base.s3_bucket}/ ({why}; pass --out DIR for a local folder)")
        log_dir = Path(tempfile.mkdtemp(prefix="plantpipe-logs-"))
    else:
        say(f"outputs: {folder}/ ({why})")
        log_dir = folder / ".logs"
    private: PrivateRedis | None = None
    workers: RoleProcesses | None = None
    # A private key prefix: workers of a shared Redis never take this run's jobs.
    prefix = f"plantpipe-run-{uuid.uuid4().hex[:8]}"
    keep_keys = False
    code = EXIT_FAILED
    try:
        if await redis_usable(base.redis_url):
            redis_url = base.redis_url
            say(f"Redis: {redis_url} (this run's keys under prefix {prefix})")
        else:
            private = PrivateRedis()
            await private.start()
            redis_url = private.url
            say(f"Redis: private redis-server ({private.origin}) on {private.socket}")
        say(f"worker logs: {log_dir}/")
        overrides = {
            "PLANTPIPE_REDIS_URL": redis_url,
            "PLANTPIPE_KEY_PREFIX": prefix,
            "PLANTPIPE_STORAGE": storage,
            "PLANTPIPE_LOG_JSON": "1",
        }
        settings = Settings(redis_url=redis_url, key_prefix=prefix, storage=storage)
        workers = RoleProcesses(child_env(overrides), log_dir)
        workers.start()
        async with PipelineClient(settings) as client:
            await wait_for_workers(client, workers, timeout=120)
            started = time.monotonic()
            session_id = await client.submit(datas, {"source": "plantpipe run"},
                                             content_types=types)  # fmt: skip
            record = await follow_session(client, session_id, names, timeout)
            result = await client.result(session_id)
            out.print(summary_table(result, names, time.monotonic() - started))
            print_warnings(result, names)
            print_outputs(record, storage, folder, base.s3_bucket)
            code = exit_code(record)
            if record.artifacts_failed:
                say(f"{record.artifacts_failed} uploads failed: `plantpipe failed list` says why")
                code = EXIT_FAILED
            keep_keys = code != EXIT_OK and private is None
            if keep_keys:
                say(f"this run's records stay under prefix {prefix} for "
                    f"{base.session_ttl_s // 86400} days: "
                    f"`plantpipe failed list --prefix {prefix}`")  # fmt: skip
    except asyncio.CancelledError:
        if stopper.signum is None:
            raise
        code = 128 + stopper.signum
    finally:
        try:
            if workers is not None:
                await workers.astop(STOP_GRACE_S, stopper.force)
            if private is not None:
                private.stop()
            elif workers is not None and not keep_keys:
                await drop_prefix(base.redis_url, prefix)
        finally:
            stopper.remove()
    if stopper.signum is not None:
        say("stopped: workers and private Redis are gone")
        return 128 + stopper.signum
    return code


async def wait_for_workers(client: PipelineClient, workers: RoleProcesses, timeout: float) -> None:
    from pipeline.registry import list_workers

    deadline = time.monotonic() + timeout
    with console.status("starting io, cpu and gpu workers (models load and warm up)…"):
        while True:
            dead = workers.dead()
            if dead:
                role = next(iter(dead))
                raise fail(
                    f"{role} worker exited at start (exit {dead[role]}): "
                    f"{workers.cause(role) or 'no cause logged'}; log: {workers.log_path(role)}",
                    EXIT_FAILED,
                )
            roles = {w.role for w in await list_workers(client.redis, client.settings)}
            if set(ROLES) <= roles:
                return
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(set(ROLES) - roles))
                raise fail(f"{missing} workers did not start in {timeout:.0f} s; logs in "
                           f"{workers.log_dir}/", EXIT_FAILED)  # fmt: skip
            await asyncio.sleep(0.2)


def print_warnings(result: SessionResult, names: list[str]) -> None:
    for photo in result.photos:
        name = names[photo.index] if photo.index < len(names) else f"photo {photo.index}"
        for warning in photo.warnings:
            emit(f"warning: {name}: {warning}")
        if photo.status == "failed" and photo.reason:
            emit(f"failed: {name}: {photo.reason}")


def print_outputs(record: SessionRecord, storage: str, folder: Path | None, bucket: str) -> None:
    """List the artifacts that were written (uploaded, and on disk for a local folder)."""
    base = f"s3://{bucket}/" if storage == "s3" or folder is None else f"{folder}/"
    written = [
        a.key
        for a in record.artifacts
        if a.state == "uploaded" and (folder is None or (folder / a.key).is_file())
    ]
    emit(f"outputs ({len(written)} files):")
    for key in written:
        emit(f"  {base}{key}")
    for a in record.artifacts:
        if a.state == "failed":
            emit(f"  not written: {a.key} (`plantpipe failed list` says why)")


@app.command()
def run(
    photos: Annotated[list[Path] | None, typer.Argument(help="JPEG/PNG/WebP photos")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="output folder (wins over PLANTPIPE_STORAGE/S3 settings)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds before giving up")] = 900.0,
) -> None:
    """Process photos end to end on an embedded default (the main job)."""
    chosen = list(photos or [])
    if not chosen:
        if not SAMPLE.exists():
            raise fail(f"no photo given and the bundled sample {SAMPLE} is missing")
        say(f"No photo given: using the bundled sample {SAMPLE.name}")
        chosen = [SAMPLE]
    datas, types = read_photos(chosen, get_settings().max_upload_bytes)
    names = [p.name for p in chosen]
    raise typer.Exit(asyncio.run(_run(datas, types, names, out_dir, timeout)))


# --- client commands ------------------------------------------------------------------


def _client_call(fn: Callable[[PipelineClient], Awaitable[T]], prefix: str | None = None) -> T:
    async def runner() -> T:
        settings = get_settings() if prefix is None else Settings(key_prefix=prefix)
        async with PipelineClient.from_settings(settings) as client:
            return await fn(client)

    return asyncio.run(runner())


PrefixOption = Annotated[
    str | None,
    typer.Option("--prefix", help="key prefix (default PLANTPIPE_KEY_PREFIX), e.g. a run's"),
]


async def warn_missing_workers(client: PipelineClient) -> None:
    from pipeline.registry import list_workers

    live = {w.role for w in await list_workers(client.redis, client.settings)}
    missing = [r for r in ("io", "gpu", "cpu") if r not in live]
    if missing:
        say(f"warning: no live {', '.join(missing)} worker on this Redis (prefix "
            f"{client.settings.key_prefix}): the session waits until one starts "
            "(`plantpipe workers`, or `plantpipe run` for an all-in-one)")  # fmt: skip


@app.command()
def submit(
    photos: Annotated[list[Path], typer.Argument(help="JPEG/PNG/WebP photos")],
    metadata: Annotated[list[str] | None, typer.Option("--meta", help="key=value")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the terminal status")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits")] = 3600.0,
) -> None:
    """Submit photos to running workers; prints the session id."""
    meta: dict[str, str] = {}
    for item in metadata or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--meta {item!r}: expected key=value")
        meta[key] = value
    datas, types = read_photos(photos, get_settings().max_upload_bytes)

    async def go(client: PipelineClient) -> int:
        await warn_missing_workers(client)
        sid = await client.submit(datas, meta, content_types=types)
        emit(sid)
        if not wait:
            return EXIT_OK
        try:
            record = await client.wait(sid, timeout=timeout)
        except TimeoutError:
            raise fail(f"session {sid} not terminal within {timeout:.0f} s; it goes on: "
                       f"`plantpipe watch {sid}`", EXIT_FAILED) from None  # fmt: skip
        say(f"{record.status}{': ' + record.reason if record.reason else ''}")
        return exit_code(record)

    raise typer.Exit(_client_call(go))


@app.command()
def status(
    session_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    prefix: PrefixOption = None,
) -> None:
    """Show a session's status, stage and per-photo progress."""
    record: SessionRecord = _client_call(lambda c: c.status(session_id), prefix)
    if as_json:
        emit(record.model_dump_json(indent=2))
    else:
        out.print(progress_table(record, [], time.monotonic()))
        if record.reason:
            emit(f"reason: {record.reason}")
    raise typer.Exit(exit_code(record) if record.terminal else EXIT_OK)


@app.command()
def watch(
    session_id: str,
    timeout: Annotated[float, typer.Option()] = 3600.0,
    prefix: PrefixOption = None,
) -> None:
    """Follow a session live (from its event stream) until it ends."""
    record = _client_call(lambda c: follow_session(c, session_id, [], timeout), prefix)
    raise typer.Exit(exit_code(record))


@failed_app.command("list")
def failed_list(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    prefix: PrefixOption = None,
) -> None:
    """Jobs that gave up, one per line (tab-separated, whole ids; --json for JSON).

    Columns: id, function, code, tries, replayable, reason."""
    letters = _client_call(lambda c: c.failed(), prefix)
    if as_json:
        emit(json.dumps([json.loads(d.model_dump_json()) for d in letters], indent=2))
        return
    if out.is_terminal:
        say(f"{len(letters)} dead letters (id, function, code, tries, replayable, reason):")
    for d in letters:
        replayable = "replayable" if d.replayable else "not-replayable"
        emit("\t".join((d.id, d.function, d.error_code, str(d.attempts), replayable,
                        one_line(d.reason))))  # fmt: skip


NOT_REPLAYABLE = (
    "its photo is already recorded as failed in its session, so replaying cannot change the "
    "result; fix the cause and resubmit the photo (`plantpipe submit PHOTO`)"
)


@failed_app.command("retry")
def failed_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="ids (default: all replayable)")] = None,
    prefix: PrefixOption = None,
) -> None:
    """Replay dead letters after fixing their cause."""

    async def go(client: PipelineClient) -> int:
        letters = client.dead_letters
        code = EXIT_OK
        targets: list[str] = []
        if ids:
            for letter_id in ids:
                letter = await letters.get(letter_id)
                if letter is None:
                    say(f"error: no dead letter {letter_id!r} (`plantpipe failed list` shows "
                        "the ids)")  # fmt: skip
                    code = EXIT_USAGE
                elif not letter.replayable:
                    say(f"error: {letter_id} ({letter.function}) cannot be replayed: "
                        f"{NOT_REPLAYABLE}")  # fmt: skip
                    code = max(code, EXIT_FAILED)
                else:
                    targets.append(letter_id)
        else:
            every = await letters.list()
            targets = [d.id for d in every if d.replayable]
            skipped = len(every) - len(targets)
            if skipped:
                say(f"{skipped} dead letters cannot be replayed: {NOT_REPLAYABLE}")
        replayed = await client.retry_failed(targets) if targets else []
        emit(f"replayed {len(replayed)}")
        for job_id in replayed:
            emit(f"  {job_id}")
        if len(replayed) < len(targets) and code == EXIT_OK:
            say("error: some dead letters could not be enqueued again (a job with the same "
                "id is queued); see `plantpipe failed list`")  # fmt: skip
            code = EXIT_FAILED
        return code

    raise typer.Exit(_client_call(go, prefix))


@app.command()
def workers(
    roles: Annotated[str, typer.Option(help="comma-separated roles to run")] = "io,cpu,gpu",
    list_only: Annotated[bool, typer.Option("--list", help="list live workers")] = False,
) -> None:
    """Run worker roles in the foreground (or --list the live ones)."""
    if list_only:
        from pipeline.registry import list_workers

        found = _client_call(lambda c: list_workers(c.redis, c.settings))
        table = Table(title=f"{len(found)} live workers", title_justify="left")
        for column in ("role", "host", "pid", "up", "id"):
            table.add_column(column, no_wrap=column == "id")
        for w in found:
            table.add_row(w.role, w.host, str(w.pid), f"{time.time() - w.started_at:.0f}s",
                          w.worker_id)  # fmt: skip
        out.print(table)
        return
    chosen = tuple(r.strip() for r in roles.split(",") if r.strip())
    unknown = [r for r in chosen if r not in ROLES]
    if unknown or not chosen:
        raise fail(f"unknown roles {unknown}; choose from {', '.join(ROLES)}")
    procs = RoleProcesses(child_env({}), Path(".plantpipe-logs"))
    procs.start(chosen)
    say(f"running {', '.join(chosen)} (logs in {procs.log_dir}/); Ctrl-C stops")
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop and not procs.dead():
        time.sleep(0.5)
    dead = procs.dead()
    if stop:
        say(f"stopping: waiting up to {STOP_GRACE_S:.0f} s for the workers to finish or hand "
            "back their jobs")  # fmt: skip
    procs.stop(STOP_GRACE_S)
    if dead and not stop:
        role = next(iter(dead))
        raise fail(f"{role} worker exited (exit {dead[role]}): "
                   f"{procs.cause(role) or 'no cause logged'}; log: {procs.log_path(role)}",
                   EXIT_FAILED)  # fmt: skip


@app.command()
def evaluate(
    scenes: Annotated[int, typer.Option(help="held-out synthetic scenes", min=1)] = 50,
    seed: Annotated[int, typer.Option(help="seed of the first scene")] = 100_000,
    size: Annotated[
        list[str] | None,
        typer.Option(help="photo size WxH, e.g. 4000x3000; repeat for several sizes"),
    ] = None,
    variant: Annotated[
        str, typer.Option(help="scene generator: classic (training-like) or wide")
    ] = "classic",
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="VARIANT@WxH (e.g. wide@4000x3000); repeatable; overrides --size"
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="processes generating and analysing scenes at once")
    ] = 1,
    width: Annotated[
        int | None, typer.Option(min=64, help="photo width (with --height; or use --size)")
    ] = None,
    height: Annotated[int | None, typer.Option(min=64)] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="also write the result, with command, models and per-scene rows, here"),
    ] = None,
) -> None:
    """Accuracy of the configured models on held-out synthetic scenes (AP50, count MAPE,
    worst scene, duplicates), per generator variant and photo size."""
    from pipeline.evaluate import (
        EvalSet,
        SceneScore,
        default_analyzer,
        report_document,
        resolve_sets,
        run_sets,
    )
    from pipeline.inference.config import InferenceConfig

    try:
        chosen = resolve_sets(sets, size, variant, width, height)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    from pipeline.inference.runtime import collected_fallbacks

    config = InferenceConfig.from_settings(get_settings()).model_copy(update={"warmup": False})
    if jobs == 1 and "PLANTPIPE_INTRA_OP_THREADS" not in os.environ:
        # one analyzer in this process: every core to ONNX Runtime (the workers' auto
        # setting splits the cores between pool processes)
        config = config.model_copy(update={"intra_op_threads": 0})
    with collected_fallbacks() as fallbacks:  # one line, not one per model session
        analyzer = default_analyzer(config)
    for note in fallbacks:
        say(f"warning: {note}")

    def progress(which: EvalSet, score: SceneScore) -> None:
        say(
            f"{which.label} seed {score.seed}: truth {score.truth}, detected {score.detected}, "
            f"estimated {score.estimated}, error {score.error_pct:+.1f}% ({score.seconds:.1f}s)"
        )

    started = time.time()
    runs = run_sets(analyzer, chosen, scenes=scenes, first_seed=seed, progress=progress, jobs=jobs)
    for result, _ in runs:
        out.print(result.markdown())
    if report is not None:
        command = "plantpipe evaluate" + "".join(f" {a}" for a in sys.argv[2:])
        document = report_document(
            runs, analyzer, command=command, started=started, wall_s=time.time() - started
        )
        report.write_text(document)
        say(f"report written to {report}")


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
