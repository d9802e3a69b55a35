"""README stays true: the configuration table is generated from the settings class, the job
table from the job graph."""

from __future__ import annotations

from pathlib import Path

from pipeline.runtime.graph import JOBS, with_job_table
from pipeline.settings import Settings
from pipeline.settings_rules import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_configuration_table_matches_settings() -> None:
    text = README.read_text()
    start = text.index("<!-- settings-table:start -->") + len("<!-- settings-table:start -->")
    end = text.index("<!-- settings-table:end -->")
    assert text[start:end].strip() == markdown_table(Settings).strip(), (
        "README configuration table is stale: `python -m pipeline.settings --readme README.md`"
    )
    assert "| allowed |" in text[start:end]  # each setting's range or set of values


def test_job_table_matches_the_graph() -> None:
    text = README.read_text()
    assert with_job_table(text) == text, (
        "README job table is stale: `python -m pipeline.runtime.graph --readme README.md`"
    )
    for name in JOBS:
        assert f"| `{name}` |" in text


def test_readme_has_exactly_two_setup_commands() -> None:
    blocks = README.read_text().split("```bash")[1:]
    assert len(blocks) == 2
    assert "plantpipe run" in blocks[0]
    assert "scripts/test" in blocks[1]
