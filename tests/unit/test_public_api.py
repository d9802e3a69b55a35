"""The public API re-exported by ``pipeline`` resolves, and resolves lazily."""

from __future__ import annotations

import subprocess
import sys

import pipeline


def test_every_public_name_resolves_to_its_module() -> None:
    assert set(pipeline.__all__) == set(pipeline._WHERE)
    for name in pipeline.__all__:
        value = getattr(pipeline, name)
        assert value.__module__ == pipeline._WHERE[name], name


def test_importing_settings_alone_stays_light() -> None:
    """``import pipeline.settings`` (what every pool process does) loads no client and no arq."""
    code = (
        "import sys, pipeline.settings; "
        "print('arq' in sys.modules, 'pipeline.client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
