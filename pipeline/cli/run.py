"""``plantpipe run``: the embedded end-to-end run — a Redis (the configured one, else a
private one), the three roles as child processes, one session followed live, its summary
and outputs, and everything stopped at the end (Ctrl-C and SIGTERM included)."""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.dashboard import describe, require_extra, start_beside_run
from pipeline.cli.errors import EXIT_FAILED, EXIT_OK, exit_code, fail
from pipeline.cli.output import (
    follow_session,
    out,
    print_outputs,
    print_warnings,
    say,
    summary_table,
)
from pipeline.cli.photos import read_photos
from pipeline.cli.workers import STOP_GRACE_S, start_roles, wait_for_workers
from pipeline.client import PipelineClient
from pipeline.embedded import PrivateRedis, RoleProcesses, drop_prefix, redis_usable
from pipeline.runtime.metadata import FILE_NAMES, file_names_entry
from pipeline.settings import Settings, get_settings

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "nursery.jpg"
DEFAULT_OUT = Path("plantpipe-out")


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


async def embedded_run(
    datas: list[bytes],
    types: list[str | None],
    names: list[str],
    out_opt: Path | None,
    timeout: float,
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
            await wait_for_workers(client, workers, timeout=120)
            if dashboard:
                board = await start_beside_run(settings, dashboard_port)
                say(describe(board))
            started = time.monotonic()
            meta = {"source": "plantpipe run", FILE_NAMES: file_names_entry(names)}
            session_id = await client.submit(datas, meta, content_types=types)
            if board is not None:
                say(f"live: {board.url}sessions/{session_id}")
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
            finished = True
            if board is not None:
                say(f"the dashboard stays up with the workers: {board.url} (drop more photos "
                    f"on {board.url}upload); Ctrl-C stops both")  # fmt: skip
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


def run(
    photos: Annotated[list[Path] | None, typer.Argument(help="JPEG/PNG/WebP photos")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="output folder (wins over PLANTPIPE_STORAGE/S3 settings)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds before giving up")] = 900.0,
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
    """Process photos end to end on an embedded default (the main job)."""
    chosen = list(photos or [])
    if not chosen:
        if not SAMPLE.exists():
            raise fail(f"no photo given and the bundled sample {SAMPLE} is missing")
        say(f"No photo given: using the bundled sample {SAMPLE.name}")
        chosen = [SAMPLE]
    datas, types = read_photos(chosen, get_settings().max_upload_bytes)
    names = [p.name for p in chosen]
    if dashboard:
        require_extra()  # before any worker starts
    raise typer.Exit(asyncio.run(embedded_run(datas, types, names, out_opt=out_dir,
                                              timeout=timeout, dashboard=dashboard,
                                              dashboard_port=dashboard_port)))  # fmt: skip
