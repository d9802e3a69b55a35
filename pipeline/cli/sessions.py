"""Commands on sessions of running workers: ``submit``, ``status``, ``watch``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.connect import PrefixOption, client_call
from pipeline.cli.errors import EXIT_FAILED, EXIT_OK, exit_code, fail
from pipeline.cli.output import (
    emit,
    follow_session,
    out,
    progress_table,
    say,
)
from pipeline.cli.photos import read_photos
from pipeline.client import PipelineClient
from pipeline.runtime.metadata import photo_names_metadata
from pipeline.schemas import SessionRecord
from pipeline.settings import get_settings


async def warn_missing_workers(client: PipelineClient) -> None:
    from pipeline.runtime.registry import list_workers

    live = {w.role for w in await list_workers(client.redis, client.settings)}
    missing = [r for r in ("io", "gpu", "cpu") if r not in live]
    if missing:
        say(
            f"warning: no live {', '.join(missing)} worker on this Redis (prefix "
            f"{client.settings.key_prefix}): the session waits until one starts "
            "(`plantpipe workers`, or `plantpipe run` for an all-in-one)"
        )


def submit(
    photos: Annotated[list[Path], typer.Argument(help="JPEG/PNG/WebP photos")],
    metadata: Annotated[list[str] | None, typer.Option("--meta", help="key=value")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the terminal status")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="seconds --wait waits")] = 3600.0,
) -> None:
    """Submit photos to running workers; prints the session id."""
    meta: dict[str, str] = {}
    for item in metadata or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--meta {item!r}: expected key=value")
        meta[key] = value
    datas, types = read_photos(photos, get_settings())

    async def go(client: PipelineClient) -> int:
        await warn_missing_workers(client)
        named = photo_names_metadata([p.name for p in photos]) | meta  # --meta wins
        sid = await client.submit(datas, named, content_types=types)
        emit(sid)
        if not wait:
            return EXIT_OK
        try:
            record = await client.wait(sid, timeout=timeout)
        except TimeoutError:
            raise fail(
                f"session {sid} not terminal within {timeout:.0f} s; it goes on: "
                f"`plantpipe watch {sid}`",
                EXIT_FAILED,
            ) from None
        say(f"{record.status}{': ' + record.reason if record.reason else ''}")
        return exit_code(record)

    raise typer.Exit(client_call(go))


def status(
    session_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    prefix: PrefixOption = None,
) -> None:
    """Show a session's status, stage and per-photo progress."""
    record: SessionRecord = client_call(lambda c: c.status(session_id), prefix)
    if as_json:
        emit(record.model_dump_json(indent=2))
    else:
        out.print(progress_table(record, [], time.monotonic()))
        if record.reason:
            emit(f"reason: {record.reason}")
    raise typer.Exit(exit_code(record) if record.terminal else EXIT_OK)


def watch(
    session_id: str,
    timeout: Annotated[float, typer.Option(min=1, help="seconds before giving up")] = 3600.0,
    prefix: PrefixOption = None,
) -> None:
    """Follow a session live (from its event stream) until it ends."""
    hint = f"; it goes on: `plantpipe watch {session_id}" + (
        f" --prefix {prefix}`" if prefix else "`"
    )
    record = client_call(
        lambda c: follow_session(c, session_id, [], timeout, prefix_hint=hint), prefix
    )
    raise typer.Exit(exit_code(record))
