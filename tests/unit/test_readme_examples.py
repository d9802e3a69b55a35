"""README's code examples are the files CI runs: each block after an
``<!-- example: PATH -->`` marker is PATH's content, character for character."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKER = re.compile(r"<!-- example: (?P<path>[^ ]+) -->\n```python\n(?P<code>.*?)```", re.S)


def test_readme_examples_are_the_tested_files() -> None:
    found = {m["path"]: m["code"] for m in MARKER.finditer(README.read_text())}
    assert set(found) == {
        "tests/examples/fastapi_app.py",
        "tests/examples/fastapi_dashboard.py",
        "tests/examples/test_kit_example.py",
    }
    for path, code in found.items():
        assert code == (REPO / path).read_text(), f"README's copy of {path} is stale"


def test_examples_use_the_kit_and_the_lifespan() -> None:
    app = (REPO / "tests/examples/fastapi_app.py").read_text()
    assert "lifespan=lifespan" in app and "on_event" not in app
    assert "status_code=400" in app and "status_code=404" in app
    kit = (REPO / "tests/examples/test_kit_example.py").read_text()
    assert "plantpipe_client" in kit and "conftest" not in kit
