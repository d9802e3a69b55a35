"""What the commands print: status lines on stderr, result lines on stdout, the live
progress table of a session, its summary, warnings and the outputs written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.cli.errors import EXIT_FAILED, fail
from pipeline.client import PipelineClient
from pipeline.runtime.metadata import PHOTO_NAME
from pipeline.schemas import SessionRecord, SessionResult

console = Console(stderr=True)
out = Console()


def say(message: str) -> None:
    """A status line on stderr, never wrapped (paths stay copyable)."""
    console.print(message, soft_wrap=True, highlight=False, markup=False)


def emit(line: str) -> None:
    """A result line on stdout: plain text, never wrapped, for scripts."""
    print(line, flush=True)


def photo_name(names: list[str], record: SessionRecord | SessionResult, index: int) -> str:
    """A photo's name: the one given, else the one recorded in the metadata, else its index."""
    if index < len(names) and names[index]:
        return names[index]
    return record.metadata.get(PHOTO_NAME.format(index)) or f"photo {index}"


def progress_table(record: SessionRecord, names: list[str], started: float) -> Table:
    more = "" if record.artifacts_final else " (more to come)"
    title = (
        f"session {record.session_id[:12]}… · {record.status} · stage {record.stage} · "
        f"uploads {record.artifacts_uploaded}/{len(record.artifacts)}{more} · "
        f"{time.monotonic() - started:.1f}s"
    )
    table = Table(title=title, title_justify="left")
    for column in ("#", "photo", "state", "detected", "estimated", "note"):
        table.add_column(column)
    for photo in record.photos:
        table.add_row(
            str(photo.index),
            photo_name(names, record, photo.index),
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
            photo_name(names, result, photo.index),
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
    client: PipelineClient,
    session_id: str,
    names: list[str],
    timeout: float,
    *,
    on_final: Callable[[SessionRecord], Awaitable[None]] | None = None,
    upload_wait: float | None = None,
    prefix_hint: str = "",
) -> SessionRecord:
    """Live table (its clock ticking between events) until the session is terminal and its
    artifacts have settled. ``on_final`` runs once, as soon as the session is terminal (its
    counts final); ``upload_wait``: after that, stop waiting once no upload has settled for
    this long (the caller keeps what is pending). The table is redrawn every second."""
    started = time.monotonic()
    record = await client.status(session_id)
    final = False
    with Live(progress_table(record, names, started), console=console, transient=False) as live:

        async def tick() -> None:
            while True:
                await asyncio.sleep(1.0)
                live.update(progress_table(record, names, started))

        ticker = asyncio.create_task(tick())
        try:
            async with asyncio.timeout(timeout):
                events = aiter(client.events(session_id, artifacts=True))
                while True:
                    try:
                        await asyncio.wait_for(anext(events), upload_wait if final else None)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:  # uploads stalled after the counts were final
                        break
                    record = await client.status(session_id)
                    live.update(progress_table(record, names, started))
                    if record.terminal and not final:
                        final = True
                        if on_final is not None:
                            await on_final(record)
                record = await client.status(session_id)
                live.update(progress_table(record, names, started))
        except TimeoutError:
            if final:  # counts final, uploads still going: the caller says what is pending
                return await client.status(session_id)
            raise fail(
                f"session {session_id} not finished within {timeout:.0f} s (status "
                f"{record.status}, stage {record.stage}){prefix_hint}",
                EXIT_FAILED,
            ) from None
        finally:
            ticker.cancel()
            if not console.is_terminal:
                live.stop()
                console.line()  # rich leaves the last render without a newline off a terminal
    return record


def print_warnings(result: SessionResult, names: list[str]) -> None:
    for photo in result.photos:
        name = photo_name(names, result, photo.index)
        for warning in photo.warnings:
            emit(f"warning: {name}: {warning}")
        if photo.status == "failed" and photo.reason:
            emit(f"failed: {name}: {photo.reason}")


def print_outputs(
    record: SessionRecord, storage: str, folder: Path | None, bucket: str, settled: bool = True
) -> None:
    """List the artifacts that were written (uploaded, and on disk for a local folder);
    with ``settled`` False the caller has listed what is not (kept, pending)."""
    base = f"s3://{bucket}/" if storage == "s3" or folder is None else f"{folder}/"
    written = [
        a.key
        for a in record.artifacts
        if (a.state == "uploaded" and folder is None)
        or (folder is not None and (folder / a.key).is_file())
    ]
    emit(f"outputs ({len(written)} files):")
    for key in written:
        emit(f"  {base}{key}")
    if record.photo_count > 1:  # keys are built from server ids: say which folder is which
        folders = ", ".join(
            f"{i}/ = {photo_name([], record, i)}" for i in range(record.photo_count)
        )
        emit(f"photo folders: {folders}")
    if not settled:
        return
    for a in record.artifacts:
        if a.state == "failed":
            emit(f"  not written: {a.key} (`plantpipe failed list` says why)")
