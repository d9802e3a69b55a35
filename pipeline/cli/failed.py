"""``plantpipe failed list|retry``: the dead letters of jobs that gave up."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipeline.cli.connect import PrefixOption, client_call
from pipeline.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, one_line
from pipeline.cli.output import emit, out, say
from pipeline.client import PipelineClient
from pipeline.runtime.deadletter import NOT_REPLAYABLE


def failed_list(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    prefix: PrefixOption = None,
) -> None:
    """Jobs that gave up, one per line (tab-separated, whole ids; --json for JSON).

    Columns: id, function, code, tries, replayable, reason."""
    letters = client_call(lambda c: c.failed(), prefix)
    if as_json:
        emit(json.dumps([json.loads(d.model_dump_json()) for d in letters], indent=2))
        return
    if out.is_terminal:
        say(f"{len(letters)} dead letters (id, function, code, tries, replayable, reason):")
    for d in letters:
        replayable = "replayable" if d.replayable else "not-replayable"
        emit(
            "\t".join(
                (d.id, d.function, d.error_code, str(d.attempts), replayable, one_line(d.reason))
            )
        )


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
                    say(
                        f"error: no dead letter {letter_id!r} (`plantpipe failed list` shows "
                        "the ids)"
                    )
                    code = EXIT_USAGE
                elif not letter.replayable:
                    say(
                        f"error: {letter_id} ({letter.function}) cannot be replayed: "
                        f"{NOT_REPLAYABLE}"
                    )
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
            say(
                "error: some dead letters could not be enqueued again (a job with the same "
                "id is queued); see `plantpipe failed list`"
            )
            code = EXIT_FAILED
        return code

    raise typer.Exit(client_call(go, prefix))
