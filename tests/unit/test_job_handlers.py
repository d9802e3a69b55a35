"""Every job handler is its work alone: at most 40 lines, the rest is the job skeleton's
(``pipeline.runtime.job.role_job``) or a named helper's. Read from the source (``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 40
ROLES = ("io", "cpu", "gpu")


def handlers(path: Path) -> dict[str, int]:
    """Lines of each function in ``path`` that arq runs as a job: decorated with
    ``role_job(...)``, or an arq cron job (``cron(name, ...)``)."""
    tree = ast.parse(path.read_text(), str(path))
    crons = {
        call.args[0].id
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "cron"
        and call.args
        and isinstance(call.args[0], ast.Name)
    }
    found: dict[str, int] = {}
    for node in tree.body:
        if not isinstance(node, ast.AsyncFunctionDef):
            continue
        decorated = any(
            isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "role_job"
            for d in node.decorator_list
        )
        if decorated or node.name in crons:
            assert node.end_lineno is not None
            found[node.name] = node.end_lineno - node.lineno + 1
    return found


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_its_jobs_found(role: str) -> None:
    """The check below sees the jobs (a role without any would mean the parser went blind)."""
    assert handlers(ROOT / "workers" / f"{role}.py"), f"no job handler found in workers/{role}.py"


@pytest.mark.parametrize("role", ROLES)
def test_job_handlers_are_short(role: str) -> None:
    long = {
        name: lines
        for name, lines in handlers(ROOT / "workers" / f"{role}.py").items()
        if lines > MAX_LINES
    }
    assert not long, f"job handlers over {MAX_LINES} lines in workers/{role}.py: {long}"
