"""``plantpipe run``: the embedded end-to-end run — a Redis (the configured one, else a
private one), the three roles as child processes, one session followed live, its summary
and outputs, and everything stopped at the end (Ctrl-C and SIGTERM included)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.dashboard import describe, require_extra, start_beside_run
from pipeline.cli.errors import EXIT_FAILED, CliError, exit_code, fail
from pipeline.cli.output import (
    emit,
    follow_session,
    out,
    print_outputs,
    print_warnings,
    say,
    summary_table,
)
from pipeline.cli.pending import EXIT_PENDING, keep_pending
from pipeline.cli.pending import resume as finish_pending
from pipeline.cli.photos import read_photos
from pipeline.cli.workers import STOP_GRACE_S, start_roles, wait_for_workers
from pipeline.client import PipelineClient
from pipeline.embedded import PrivateRedis, RoleProcesses, drop_prefix, redis_usable
from pipeline.runtime.metadata import photo_names_metadata
from pipeline.schemas import SessionRecord
from pipeline.settings import Settings, get_settings
from pipeline.storage.breaker import RedisCircuitBreaker
from pipeline.storage.local import LocalObjectStore

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "nursery.jpg"
DEFAULT_OUT = Path("plantpipe-out")
MIB = 1024 * 1024


def choose_storage(out_dir: Path | None, base: Settings) -> tuple[str, Path | None, str]:
    """``(storage, local folder or None, why)``: ``--out`` wins over the environment; without
    it the environment decides (PLANTPIPE_STORAGE, else S3 when a bucket or endpoint is set),
    else the default folder."""
    given = base.model_fields_set  # the settings the environment names
    if out_dir is not None:
        folder = out_dir.resolve()
        return str(folder), folder, "--out"
    if "storage" in given:
        if base.storage.lower() == "s3":
            return "s3", None, "PLANTPIPE_STORAGE=s3"
        folder = Path(base.storage).resolve()
        return str(folder), folder, "PLANTPIPE_STORAGE"
    if given & {"s3_bucket", "s3_endpoint_url"}:
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


def usable_folder(folder: Path, what: str, need_bytes: int = 0) -> str | None:
    """Why ``folder`` cannot take the run's files (not a directory, cannot be created or
    written, too little space), or None when it can. Nothing is left behind by the probe."""
    try:
        if folder.exists() and not folder.is_dir():
            return f"{what} {folder} is a file, not a folder; pass a folder"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".plantpipe-probe-"):
            pass
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return (
            f"{what} {folder}: cannot write there ({exc.strerror or exc}); choose a writable folder"
        )
    if free < need_bytes:
        return (
            f"{what} {folder}: only {free / MIB:.1f} MiB free on its disk, the run needs "
            f"about {need_bytes / MIB:.0f} MiB; free some space or choose another folder"
        )
    return None


def local_folder(storage_folder: Path | None, need_bytes: int) -> tuple[Path, str]:
    """Where the run keeps its files on this machine: the output folder (refused with the
    reason when unusable); for S3 runs ``./plantpipe-out`` (results.json, pending uploads,
    logs), else a temporary folder when that cannot be written."""
    if storage_folder is not None:
        problem = usable_folder(storage_folder, "--out", need_bytes)
        if problem is not None:
            raise fail(problem)
        return storage_folder, ""
    candidate = DEFAULT_OUT.resolve()
    problem = usable_folder(candidate, "local copy folder", need_bytes=1 * MIB)
    if problem is None:
        return candidate, ""
    return Path(tempfile.mkdtemp(prefix="plantpipe-run-")), f" ({problem})"


async def embedded_run(
    datas: list[bytes],
    types: list[str | None],
    names: list[str],
    out_opt: Path | None,
    timeout: float,
    upload_wait: float,
    dashboard: bool = False,
    dashboard_port: int | None = None,
) -> int:
    """One session end to end on embedded workers; the exit code (128 + signal if stopped).
    With ``dashboard``, the dashboard serves the run live and stays up, with the workers,
    until Ctrl-C (the exit code is then the session's)."""
    base = get_settings()
    task = asyncio.current_task()
    assert task is not None
    stopper = Stopper(task)
    storage, folder, why = choose_storage(out_opt, base)
    # A private key prefix: workers of a shared Redis never take this run's jobs.
    prefix = f"plantpipe-run-{uuid.uuid4().hex[:8]}"
    local, fallback = local_folder(folder, sum(len(d) for d in datas) * 2 + len(datas) * MIB)
    if folder is None:
        say(
            f"outputs: s3://{base.s3_bucket}/ ({why}; pass --out DIR for a local folder); "
            f"results.json and any upload S3 does not take are kept in {local}/{fallback}"
        )
    else:
        say(f"outputs: {folder}/ ({why})")
    log_dir = local / ".logs" / prefix  # one folder per run: runs sharing --out never mix
    stopper.install()
    private: PrivateRedis | None = None
    workers: RoleProcesses | None = None
    keep_keys = False
    code = EXIT_FAILED
    board = None
    finished = False  # the session's summary is out: a stop now ends a --dashboard wait
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
        settings = Settings(redis_url=redis_url, key_prefix=prefix, storage=storage)
        workers = start_roles(settings.model_copy(update={"log_json": True}), log_dir)
        async with PipelineClient(settings) as client:
            # a worker that dies is reported at once; slow start-ups (models loading on a busy
            # machine: 60 s+ seen at load 20 on 2 cores) are waited for
            await wait_for_workers(client, workers, timeout=300)
            if dashboard:
                board = await start_beside_run(settings, dashboard_port)
                say(describe(board))
            started = time.monotonic()
            meta = {"source": "plantpipe run", **photo_names_metadata(names)}
            session_id = await client.submit(datas, meta, content_types=types, decode_check=False)
            if board is not None:
                say(f"live: {board.url}sessions/{session_id}")
            kept_results: list[Path] = []

            async def counts_final(_record: SessionRecord) -> None:
                if folder is None:  # S3: the counts on this disk now, whatever S3 does
                    kept_results.append(await keep_results(client, session_id, local))

            hint = (
                f"; its records stay under prefix {prefix}: `plantpipe status {{}} --prefix "
                f"{prefix}`"
                if private is None
                else ""
            )
            try:
                record = await follow_session(
                    client,
                    session_id,
                    names,
                    timeout,
                    on_final=counts_final,
                    upload_wait=upload_wait,
                    prefix_hint=hint.format(session_id),
                )
            except CliError:
                keep_keys = private is None  # what the hint points at stays
                raise
            result = await client.result(session_id)
            out.print(summary_table(result, names, time.monotonic() - started))
            print_warnings(result, names)
            code = exit_code(record)
            pending = [a.key for a in record.artifacts if a.state != "uploaded"]
            if pending:
                await workers.astop(STOP_GRACE_S, stopper.force)  # nothing moves any more
                record = await client.status(session_id)
                code = await report_pending(client, record, local, folder, base, code)
            print_outputs(record, storage, folder, base.s3_bucket, not pending)
            for path in kept_results:
                emit(f"results (local copy): {path}")
            keep_keys = code == EXIT_FAILED and private is None
            if keep_keys:
                say(
                    f"this run's records stay under prefix {prefix} for "
                    f"{base.session_ttl_s // 86400} days: "
                    f"`plantpipe failed list --prefix {prefix}`"
                )
            finished = True
            if board is not None and not pending:
                say(
                    f"the dashboard stays up with the workers: {board.url} (drop more photos "
                    f"on {board.url}upload); Ctrl-C stops both"
                )
                await asyncio.Event().wait()  # until Ctrl-C or SIGTERM
    except asyncio.CancelledError:
        if stopper.signum is None:
            raise
        if not finished:
            code = 128 + stopper.signum
    finally:
        try:
            if board is not None:
                await board.stop()
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
        return code if finished else 128 + stopper.signum
    return code


async def keep_results(client: PipelineClient, session_id: str, local: Path) -> Path:
    """The session's results.json under ``local`` (the bytes aggregate uploads)."""
    result = await client.result(session_id)
    path = local / session_id / "results.json"
    await LocalObjectStore(local).put(
        f"{session_id}/results.json",
        result.model_dump_json(indent=2).encode(),
        content_type="application/json",
    )
    say(f"counts final: results.json kept at {path}")
    return path


async def report_pending(
    client: PipelineClient,
    record: SessionRecord,
    local: Path,
    folder: Path | None,
    base: Settings,
    code: int,
) -> int:
    """After the workers stopped: keep what is not uploaded on disk, say which and how to
    finish them; the exit code (EXIT_PENDING unless processing failed)."""
    breaker = await RedisCircuitBreaker(client.redis, client.settings).state()
    why = (
        "S3 unreachable: the io workers' circuit breaker is open"
        if breaker == "open"
        else f"not uploaded when the run stopped waiting ({breaker} breaker)"
    )
    kept, lost = await keep_pending(client, record.session_id, local, why)
    for item in lost:
        emit(f"  not written: {item}")
    if folder is not None:  # a local folder: written in place, nothing left to do
        say(f"{len(kept)} outputs the io worker had not written were written by the run")
        return code if not lost else EXIT_FAILED
    say(
        f"{len(kept)} uploads pending; kept on this disk, to finish with `plantpipe run "
        f"--resume {local / record.session_id}`:"
    )
    for upload in kept:
        emit(
            f"  pending: s3://{base.s3_bucket}/{upload.key} <- {local / upload.key} "
            f"({upload.reason})"
        )
    return EXIT_FAILED if code == EXIT_FAILED or lost else EXIT_PENDING


def run(
    photos: Annotated[list[Path] | None, typer.Argument(help="JPEG/PNG/WebP photos")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="output folder (wins over PLANTPIPE_STORAGE/S3 settings)"),
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="seconds before giving up")] = 900.0,
    upload_wait: Annotated[
        float,
        typer.Option(
            min=1,
            help="once the counts are final, seconds to wait for an upload to finish before "
            "leaving the rest pending (kept on disk, exit 3)",
        ),
    ] = 60.0,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="finish the uploads an earlier run left pending in this folder, then exit",
        ),
    ] = None,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="serve the web dashboard on 127.0.0.1 while it runs; "
            "it stays up with the workers (upload more photos) until Ctrl-C",
        ),
    ] = False,
    dashboard_port: Annotated[
        int | None,
        typer.Option(
            "--dashboard-port",
            min=0,
            max=65535,
            help="the dashboard's port (default PLANTPIPE_DASHBOARD_PORT, 8080; "
            "a free one when that is taken)",
        ),
    ] = None,
) -> None:
    """Process photos end to end on an embedded default (the main job).

    Exit codes: 0 ok, 1 processing failed, 2 usage or input error, 3 counts final and on
    disk but uploads pending (finish them with --resume DIR)."""
    if resume is not None:
        if photos:
            raise fail("--resume takes no photos: it finishes an earlier run's uploads")
        raise typer.Exit(asyncio.run(finish_pending(resume, get_settings())))
    chosen = list(photos or [])
    if not chosen:
        if not SAMPLE.exists():
            raise fail(f"no photo given and the bundled sample {SAMPLE} is missing")
        say(f"No photo given: using the bundled sample {SAMPLE.name}")
        chosen = [SAMPLE]
    datas, types = read_photos(chosen, get_settings())
    names = [p.name for p in chosen]
    if dashboard:
        require_extra()  # before any worker starts
    raise typer.Exit(
        asyncio.run(
            embedded_run(
                datas,
                types,
                names,
                out_opt=out_dir,
                timeout=timeout,
                upload_wait=upload_wait,
                dashboard=dashboard,
                dashboard_port=dashboard_port,
            )
        )
    )
