"""README stays true: the configuration table is generated from the settings class."""

from __future__ import annotations

from pathlib import Path

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


def test_readme_has_exactly_two_setup_commands() -> None:
    blocks = README.read_text().split("```bash")[1:]
    assert len(blocks) == 2
    assert "plantpipe run" in blocks[0]
    assert "scripts/test" in blocks[1]
