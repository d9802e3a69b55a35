"""``plantpipe`` command: run, submit, status, watch, failed list|retry, workers.

Exit codes: 0 ok, 1 processing failed (some or all photos), 2 usage or input error.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.client import PipelineClient
from pipeline.embedded import ROLES, PrivateRedis, RoleProcesses, child_env, redis_usable
from pipeline.errors import PipelineError
from pipeline.schemas import SessionRecord, SessionResult
from pipeline.settings import Settings, get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
failed_app = typer.Typer(no_args_is_help=True, help="Dead letters: jobs that gave up.")
app.add_typer(failed_app, name="failed")
console = Console(stderr=True)
out = Console()

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                 ".webp": "image/webp"}  # fmt: skip
SAMPLE = Path(__file__).resolve().parent / "samples" / "nursery.jpg"


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def read_photos(paths: list[Path]) -> tuple[list[bytes], list[str | None]]:
    datas: list[bytes] = []
    types: list[str | None] = []
    for path in paths:
        if not path.is_file():
            raise fail(f"{path}: no such file")
        datas.append(path.read_bytes())
        types.append(CONTENT_TYPES.get(path.suffix.lower()))
    return datas, types


def exit_code(status: str) -> int:
    return EXIT_OK if status == "completed" else EXIT_FAILED


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
    """Live table until the session is terminal and its artifacts are uploaded."""
    started = time.monotonic()
    record = await client.status(session_id)
    with Live(progress_table(record, names, started), console=console, transient=False) as live:
        async with asyncio.timeout(timeout):
            async for _event in client.events(session_id):
                record = await client.status(session_id)
                live.update(progress_table(record, names, started))
                if record.terminal and (record.artifacts_ready or record.artifacts_settled):
                    break
    return record


# --- run: the main job ----------------------------------------------------------------


def _wants_s3() -> bool:
    env = os.environ
    return env.get("PLANTPIPE_STORAGE", "").lower() == "s3" or any(
        k in env for k in ("PLANTPIPE_S3_BUCKET", "PLANTPIPE_S3_ENDPOINT_URL")
    )


async def _run(
    datas: list[bytes], types: list[str | None], names: list[str], out_dir: Path, timeout: float
) -> int:
    base = get_settings()
    private: PrivateRedis | None = None
    workers: RoleProcesses | None = None
    if await redis_usable(base.redis_url):
        redis_url = base.redis_url
        console.print(f"Redis: {redis_url}")
    else:
        private = PrivateRedis()
        await private.start()
        redis_url = private.url
        console.print(f"Redis: private redis-server on {private.socket}")
    storage = "s3" if _wants_s3() else str(out_dir)
    console.print(f"Storage: {'S3 bucket ' + base.s3_bucket if storage == 's3' else out_dir}")
    # A private key prefix: workers of a shared Redis never take this run's jobs.
    prefix = f"plantpipe-run-{uuid.uuid4().hex[:8]}"
    overrides = {
        "PLANTPIPE_REDIS_URL": redis_url,
        "PLANTPIPE_KEY_PREFIX": prefix,
        "PLANTPIPE_STORAGE": storage,
        "PLANTPIPE_LOG_JSON": "1",
    }
    settings = Settings(redis_url=redis_url, key_prefix=prefix, storage=storage)
    try:
        workers = RoleProcesses(child_env(overrides), out_dir / ".logs")
        workers.start()
        async with PipelineClient(settings) as client:
            await wait_for_workers(client, workers, timeout=120)
            started = time.monotonic()
            session_id = await client.submit(datas, {"source": "plantpipe run"},
                                             content_types=types)  # fmt: skip
            record = await follow_session(client, session_id, names, timeout)
            result = await client.result(session_id)
            out.print(summary_table(result, names, time.monotonic() - started))
            print_outputs(result, storage, out_dir)
            if record.artifacts_failed:
                console.print(f"[red]{record.artifacts_failed} uploads failed[/red]: "
                              "`plantpipe failed list` shows why")  # fmt: skip
                return EXIT_FAILED
            return exit_code(result.status)
    finally:
        if workers is not None:
            workers.stop()
        if private is not None:
            private.stop()


async def wait_for_workers(client: PipelineClient, workers: RoleProcesses, timeout: float) -> None:
    from pipeline.registry import list_workers

    deadline = time.monotonic() + timeout
    with console.status("starting io, cpu and gpu workers (models load and warm up)…"):
        while True:
            dead = workers.dead()
            if dead:
                role = next(iter(dead))
                raise fail(f"{role} worker exited ({dead[role]}):\n{workers.tail(role)}",
                           EXIT_FAILED)  # fmt: skip
            roles = {w.role for w in await list_workers(client.redis, client.settings)}
            if set(ROLES) <= roles:
                return
            if time.monotonic() > deadline:
                raise fail(f"workers did not start in {timeout:.0f} s; logs in {workers.log_dir}",
                           EXIT_FAILED)  # fmt: skip
            await asyncio.sleep(0.2)


def print_outputs(result: SessionResult, storage: str, out_dir: Path) -> None:
    keys = [k for p in result.photos for k in p.keys.values() if k] + list(result.keys.values())
    prefix = "s3://" + get_settings().s3_bucket + "/" if storage == "s3" else str(out_dir) + "/"
    for key in keys:
        out.print(f"  {prefix}{key}")


@app.command()
def run(
    photos: Annotated[list[Path] | None, typer.Argument(help="JPEG/PNG/WebP photos")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("plantpipe-out"),
    timeout: Annotated[float, typer.Option(help="seconds before giving up")] = 900.0,
) -> None:
    """Process photos end to end on an embedded default (the main job)."""
    chosen = list(photos or [])
    if not chosen:
        if not SAMPLE.exists():
            raise fail(f"no photo given and the bundled sample {SAMPLE} is missing")
        console.print(f"No photo given: using the bundled sample {SAMPLE.name}")
        chosen = [SAMPLE]
    try:
        datas, types = read_photos(chosen)
        names = [p.name for p in chosen]
        code = asyncio.run(_run(datas, types, names, out_dir.resolve(), timeout))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: workers and private Redis stopped[/yellow]")
        code = 130
    except PipelineError as exc:
        code = EXIT_USAGE if exc.code.startswith("invalid") else EXIT_FAILED
        raise fail(exc.reason, code) from exc
    except TimeoutError:
        raise fail(f"not finished within {timeout:.0f} s", EXIT_FAILED) from None
    raise typer.Exit(code)


# --- client commands ------------------------------------------------------------------


def _client_call(fn: Any) -> Any:
    async def runner() -> Any:
        async with PipelineClient.from_settings() as client:
            return await fn(client)

    try:
        return asyncio.run(runner())
    except LookupError as exc:
        raise fail(str(exc)) from exc
    except PipelineError as exc:
        raise fail(exc.reason) from exc
    except (ConnectionError, OSError) as exc:
        raise fail(f"cannot reach Redis ({exc}); check PLANTPIPE_REDIS_URL", EXIT_FAILED) from exc


@app.command()
def submit(
    photos: Annotated[list[Path], typer.Argument(help="JPEG/PNG/WebP photos")],
    metadata: Annotated[list[str] | None, typer.Option("--meta", help="key=value")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the terminal status")] = False,
) -> None:
    """Submit photos to running workers; prints the session id."""
    datas, types = read_photos(photos)
    meta: dict[str, str] = {}
    for item in metadata or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--meta {item!r}: expected key=value")
        meta[key] = value

    async def go(client: PipelineClient) -> int:
        sid = await client.submit(datas, meta, content_types=types)
        out.print(sid)
        if not wait:
            return EXIT_OK
        record = await client.wait(sid, timeout=3600)
        console.print(f"{record.status}{': ' + record.reason if record.reason else ''}")
        return exit_code(record.status)

    raise typer.Exit(_client_call(go))


@app.command()
def status(session_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a session's status, stage and per-photo progress."""
    record: SessionRecord = _client_call(lambda c: c.status(session_id))
    if as_json:
        out.print_json(record.model_dump_json())
    else:
        out.print(progress_table(record, [], time.monotonic()))
        if record.reason:
            out.print(f"reason: {record.reason}")
    raise typer.Exit(exit_code(record.status) if record.terminal else EXIT_OK)


@app.command()
def watch(session_id: str, timeout: Annotated[float, typer.Option()] = 3600.0) -> None:
    """Follow a session live (from its event stream) until it ends."""
    record = _client_call(lambda c: follow_session(c, session_id, [], timeout))
    raise typer.Exit(exit_code(record.status))


@failed_app.command("list")
def failed_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Jobs that gave up, with their error code and reason."""
    letters = _client_call(lambda c: c.failed())
    if as_json:
        out.print_json(json.dumps([json.loads(d.model_dump_json()) for d in letters]))
        return
    table = Table(title=f"{len(letters)} dead letters", title_justify="left")
    for column in ("id", "function", "code", "tries", "replayable", "reason"):
        table.add_column(column)
    for d in letters:
        table.add_row(d.id, d.function, d.error_code, str(d.attempts), str(d.replayable),
                      d.reason)  # fmt: skip
    out.print(table)


@failed_app.command("retry")
def failed_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="ids (default: all)")] = None,
) -> None:
    """Replay dead letters after fixing their cause."""
    replayed = _client_call(lambda c: c.retry_failed(list(ids) if ids else None))
    out.print(f"replayed {len(replayed)}")
    for job_id in replayed:
        out.print(f"  {job_id}")


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
            table.add_column(column)
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
    console.print(f"running {', '.join(chosen)} (logs in {procs.log_dir}); Ctrl-C stops")
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop and not procs.dead():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    dead = procs.dead()
    procs.stop()
    if dead:
        raise fail(f"worker exited: {dead}", EXIT_FAILED)


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
    config = InferenceConfig.from_settings(get_settings()).model_copy(update={"warmup": False})
    analyzer = default_analyzer(config)

    def progress(which: EvalSet, score: SceneScore) -> None:
        console.print(
            f"{which.label} seed {score.seed}: truth {score.truth}, detected {score.detected}, "
            f"estimated {score.estimated}, error {score.error_pct:+.1f}% ({score.seconds:.1f}s)"
        )

    started = time.time()
    runs = run_sets(analyzer, chosen, scenes=scenes, first_seed=seed, progress=progress)
    for result, _ in runs:
        out.print(result.markdown())
    if report is not None:
        command = "plantpipe evaluate" + "".join(f" {a}" for a in sys.argv[2:])
        document = report_document(
            runs, analyzer, command=command, started=started, wall_s=time.time() - started
        )
        report.write_text(document)
        console.print(f"report written to {report}")


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # e.g. `plantpipe failed list | head`
        sys.exit(EXIT_OK)
