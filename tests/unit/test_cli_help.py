"""Every --help reads as plain text: no reStructuredText markup from docstrings, no option
help cut off mid-sentence."""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

import pipeline.cli as cli
from pipeline.cli import app, evaluate, run

COMMANDS = [
    [],
    ["run"],
    ["submit"],
    ["status"],
    ["watch"],
    ["workers"],
    ["evaluate"],
    ["failed", "list"],
    ["failed", "retry"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "plantpipe")
def test_help_has_no_rst_markup(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for markup in ("``", ":func:", ":class:", ":meth:"):
        assert markup not in result.output, (command, markup)
    for line in result.output.splitlines():
        assert not line.rstrip(" │").endswith(("e.g. a run's", "e.g.")), line


def test_the_top_level_help_names_every_exit_code() -> None:
    output = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "3 counts final but uploads pending" in " ".join(output.split())


@pytest.mark.parametrize(
    ("command", "doc"),
    [([], cli.__doc__), (["run"], run.run.__doc__), (["evaluate"], evaluate.evaluate.__doc__)],
    ids=["plantpipe", "run", "evaluate"],
)
def test_help_paragraphs_flow_with_the_terminal(command: list[str], doc: str | None) -> None:
    """Each paragraph of a docstring is one line on a wide terminal: the source's line breaks
    are not kept (on 80 columns they cut sentences into a long and a short line)."""
    output = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "400"}).output
    lines = [line.strip(" │") for line in output.splitlines()]
    for paragraph in inspect.cleandoc(doc or "").split("\n\n"):
        flowed = " ".join(paragraph.split())
        assert flowed in lines, (flowed, lines)
