"""Role processes: ``plantpipe workers`` runs them in the foreground (or lists the live
ones); :func:`start_roles` and :func:`wait_for_workers` also serve ``plantpipe run``."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipeline.cli.connect import client_call
from pipeline.cli.errors import EXIT_FAILED, fail
from pipeline.cli.output import console, out, say
from pipeline.client import PipelineClient
from pipeline.embedded import ROLES, RoleProcesses, child_env
from pipeline.settings import Settings, get_settings

STOP_GRACE_S = 15.0  # workers get this long to finish or hand back their jobs, then SIGKILL


def start_roles(
    settings: Settings, log_dir: Path, roles: tuple[str, ...] = ROLES, processes: int = 1
) -> RoleProcesses:
    """Start ``processes`` child processes of each of ``roles``, configured by ``settings``
    (and nothing else)."""
    procs = RoleProcesses(child_env(settings), log_dir)
    procs.start(roles, processes)
    return procs


async def wait_for_workers(client: PipelineClient, workers: RoleProcesses, timeout: float) -> None:
    from pipeline.runtime.registry import list_workers

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
                raise fail(
                    f"{missing} workers did not start in {timeout:.0f} s; logs in "
                    f"{workers.log_dir}/",
                    EXIT_FAILED,
                )
            await asyncio.sleep(0.2)


class ConsoleEcho:
    """What the role processes say that a person at the console must see, from their logs:
    their own plain lines (Redis unreachable, cannot start) and records at warning or above
    (outages, a breaker that opened, jobs that gave up), each event at most every
    ``REPEAT_S`` per worker, one line each."""

    REPEAT_S = 30.0

    def __init__(self, procs: RoleProcesses) -> None:
        self.procs = procs
        self.offsets: dict[str, int] = {}
        self.last: dict[tuple[str, str], float] = {}

    @staticmethod
    def notable(line: str) -> tuple[str, str] | None:
        """``(event, message)`` of a line worth showing, else None."""
        line = line.strip()
        if not line.startswith("{"):
            # "error: ... cannot start" is said once, by the exit report
            shown = " worker: " in line and not line.startswith("error:")
            return (line.split(":", 1)[0], line) if shown else None
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if str(record.get("level", "")).lower() not in ("warning", "error", "critical"):
            return None
        event = str(record.get("event", ""))
        detail = record.get("reason") or record.get("error") or record.get("key") or ""
        return event, f"{event}: {detail}" if detail else event

    def poll(self) -> None:
        now = time.monotonic()
        for name in self.procs.processes:
            path = self.procs.log_path(name)
            try:
                with path.open("rb") as fh:
                    fh.seek(self.offsets.get(name, 0))
                    chunk = fh.read()
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self.offsets[name] = self.offsets.get(name, 0) + len(complete)
            for raw in complete.decode(errors="replace").splitlines():
                found = self.notable(raw)
                if found is None:
                    continue
                event, message = found
                if now - self.last.get((name, event), -self.REPEAT_S) >= self.REPEAT_S:
                    self.last[(name, event)] = now
                    say(f"{name}: {message}")


def list_live_workers() -> None:
    from pipeline.runtime.registry import list_workers

    found = client_call(lambda c: list_workers(c.redis, c.settings))
    table = Table(title=f"{len(found)} live workers", title_justify="left")
    for column in ("role", "host", "pid", "up", "id"):
        table.add_column(column, no_wrap=column == "id")
    for w in found:
        table.add_row(w.role, w.host, str(w.pid), f"{time.time() - w.started_at:.0f}s", w.worker_id)
    out.print(table)


def workers(
    roles: Annotated[str, typer.Option(help="comma-separated roles to run")] = "io,cpu,gpu",
    list_only: Annotated[bool, typer.Option("--list", help="list live workers")] = False,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="processes per role (each its own event loop and semaphores: "
            "PLANTPIPE_IO_CONCURRENCY S3 requests per io process)",
        ),
    ] = 1,
) -> None:
    """Run worker roles in the foreground (or --list the live ones)."""
    if list_only:
        list_live_workers()
        return
    chosen = tuple(r.strip() for r in roles.split(",") if r.strip())
    unknown = [r for r in chosen if r not in ROLES]
    if unknown or not chosen:
        raise fail(f"unknown roles {unknown}; choose from {', '.join(ROLES)}")
    procs = start_roles(get_settings(), Path(".plantpipe-logs"), chosen, processes)
    names = ", ".join(procs.processes)
    say(f"running {names} (logs in {procs.log_dir}/); Ctrl-C stops")
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    echo = ConsoleEcho(procs)
    while not stop and not procs.dead():
        echo.poll()
        time.sleep(0.5)
    echo.poll()
    dead = procs.dead()
    if stop:
        say(
            f"stopping: waiting up to {STOP_GRACE_S:.0f} s for the workers to finish or hand "
            "back their jobs"
        )
    procs.stop(STOP_GRACE_S)
    if dead and not stop:
        role = next(iter(dead))
        raise fail(
            f"{role} worker exited (exit {dead[role]}): "
            f"{procs.cause(role) or 'no cause logged'}; log: {procs.log_path(role)}",
            EXIT_FAILED,
        )
