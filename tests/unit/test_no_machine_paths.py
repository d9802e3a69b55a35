"""No tracked file records an absolute path of a build machine.

What counts as a build machine's path — something true of one machine's file system only,
which a reader elsewhere cannot use and which leaks where a build ran:

* a working copy's folder: ``/work/…`` (the checkouts of this workplace);
* a home folder: ``/root/…``, ``/home/<user>/…``, ``/Users/<user>/…``, ``~/`` is fine
  (it is every reader's own home);
* a virtual environment by absolute path: ``/<anything>/.venv*/…`` (``.venv/bin/python``,
  relative to the checkout, is fine) and any absolute ``…/site-packages/…``;
* a temporary build folder named after a checkout: ``/tmp/<…>/work/…``, ``/tmp/<…>/main/…``
  or a pytest ``/tmp/pytest-of-<user>/…`` folder.

Not counted (they mean the same on every machine, or are the deployment's own layout):
system paths such as ``/usr/bin``, ``/etc/…``, ``/var/lib/…``, ``/dev/…``, a container
image's ``/opt/venv`` (in a Dockerfile, the image's layout), and cache or scratch folders a
tool *chooses* under ``/tmp`` (``/tmp/plantpipe-bench-scenes``, ``/tmp/rebuild`` as an
example ``--out``) that name no checkout.

Every text file that ``git ls-files`` lists is read (binary files — with a NUL byte in the
first 8 KiB or not UTF-8 — are skipped). This file itself spells the patterns out, so it is
skipped too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()

# A path starts at a boundary: not after a word character, a dot or another path part, so
# that `pipeline/work/x` or `~/.venv` style relative mentions do not count.
_START = r"(?<![\w.~/-])"
PATTERNS: dict[str, re.Pattern[str]] = {
    "working copy (/work/…)": re.compile(_START + r"/work/[\w.-]"),
    "home folder": re.compile(_START + r"/(?:root|home/[\w.-]+|Users/[\w.-]+)/"),
    "absolute venv": re.compile(_START + r"/(?:[\w.+-]+/)*\.venv[\w-]*/"),
    "absolute site-packages": re.compile(_START + r"/(?:[\w.+-]+/)+site-packages\b"),
    "checkout under /tmp": re.compile(
        _START + r"/tmp/(?:pytest-of-[\w.-]+|(?:[\w.+-]+/)*(?:work|main)/)"
    ),
}


def tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    files = []
    for name in filter(None, out.split("\0")):
        path = ROOT / name
        if name == SELF or not path.is_file():  # deleted in the working tree, a submodule
            continue
        files.append(path)
    return files


def read_text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def machine_paths(text: str) -> list[tuple[int, str, str]]:
    """``(line number, kind, line)`` of each line holding a build machine's absolute path."""
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        for kind, pattern in PATTERNS.items():
            if pattern.search(line):
                hits.append((number, kind, line.strip()[:160]))
                break
    return hits


@pytest.mark.parametrize(
    "text",
    [
        "/work/main/.venv-build/bin/python -m training.build",
        "cd /work/main",
        "see /root/.cache/pip",
        "/home/alice/src/plantpipe/README.md",
        "/opt/build/.venv/bin/pip install",
        "/usr/lib/python3.11/site-packages/torch",
        "/tmp/ci/work/plantpipe/pipeline",
        "/tmp/pytest-of-root/pytest-3/test_x0",
    ],
)
def test_the_patterns_catch_machine_paths(text: str) -> None:
    assert machine_paths(text), text


@pytest.mark.parametrize(
    "text",
    [
        ".venv/bin/python -m training.build --seed 0 --out pipeline/models",
        "python3 -m venv .venv-train && .venv-train/bin/pip install -e '.[dev,train]'",
        "#!/usr/bin/env bash",
        "cache in /tmp/plantpipe-bench-scenes (PLANTPIPE_BENCH_CACHE)",
        "python -m training.compare /tmp/rebuild pipeline/models",
        "ENV PATH=/opt/venv/bin:$PATH",
        "rm -rf /var/lib/apt/lists/*",
        "bench/celery_baseline/.venv",
        "~/.venv/bin/python",
        "s3://bucket/work/main/x.jpg",
        "https://example.org/home/docs",
    ],
)
def test_the_patterns_let_portable_paths_through(text: str) -> None:
    assert not machine_paths(text), text


def test_no_tracked_file_holds_a_build_machines_absolute_path() -> None:
    found = []
    for path in tracked_text_files():
        text = read_text(path)
        if text is None:
            continue
        rel = path.relative_to(ROOT).as_posix()
        found += [f"{rel}:{n}: {kind}: {line}" for n, kind, line in machine_paths(text)]
    assert not found, "absolute build-machine paths in tracked files:\n" + "\n".join(found)
