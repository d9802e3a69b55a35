"""Every benchmark of plantpipe, one command:

    python -m bench [--quick] [--sections io,callback,fanin,latency,sliced,e2e]

Starts what it needs — an S3 stub process (``pipeline.testing.s3stub``), the worker processes
of each section, the Celery baseline's own venv (``bench/celery_baseline/.venv``, created on
first use) — runs each section with ≥ 5 repetitions and writes ``bench/RESULTS.md`` (or
``--out``). Redis: ``127.0.0.1:6379`` db 14 for plantpipe (own key prefix per run, removed at
the end), db 13 for the Celery baseline's broker and backend. Only 127.0.0.1 traffic.

This module is the entry point only: it runs the sections in one
:class:`~bench.harness.Harness` and writes the report. What the sections share is in
:mod:`bench.harness` and :mod:`bench.cluster`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Final

from bench.common import git_revision, machine
from bench.harness import BENCH_DIR, REPO, Harness, SectionOutput

SECTIONS: Final = ("io", "callback", "fanin", "latency", "sliced", "e2e")
TITLES: Final[Mapping[str, str]] = {
    "io": "1. S3 upload throughput (io role)",
    "callback": "2. The unblocked callback (S3 at 2 s per request)",
    "fanin": "3. Fan-out / fan-in overhead",
    "latency": "4. Queue latency and no-op throughput",
    "sliced": "5. Sliced inference",
    "e2e": "6. End to end, 12 MP photos",
}
#: Results this command does not measure itself but RESULTS.md carries, each written by its
#: own command (with that command, date and inputs in the file): title, file, how to refresh.
INCLUDED: Final = (
    (
        "AVIF visualization: encoder settings measured",
        BENCH_DIR / "AVIF.md",
        "python -m bench.avif",
    ),
    (
        "Counting accuracy of the default models",
        BENCH_DIR / "ACCURACY.md",
        "bash bench/accuracy_conditions.sh 9afb632 OUT (then bench/ACCURACY.md from OUT's reports)",
    ),
    (
        "Faults survived (the fault-and-abuse suite)",
        BENCH_DIR / "FAULTS.md",
        "python -m bench.faults",
    ),
    (
        "Dashboard: the sessions page at 10,000 sessions, 100 idle live pages",
        BENCH_DIR / "DASHBOARD.md",
        "python -m bench.dashboard",
    ),
    (
        "Redis under Sentinel: what waiting for a replica costs",
        BENCH_DIR / "REPLICA_WAIT.md",
        "python -m bench.replica_wait",
    ),
    (
        "Band estimation stage: CPU per 12 MP photo",
        BENCH_DIR / "ESTIMATE.md",
        "python -m bench.estimate_stage --before REV",
    ),
)


def included(path: Path, how: str) -> str:
    """An included result file, its headings pushed one level down; or how to produce it."""
    if not path.is_file():
        return f"**Not recorded yet:** `{path.name}` is missing; produce it with `{how}`."
    lines = path.read_text().strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]  # the file's own title: the section heading replaces it
    body = "\n".join(("#" + line) if line.startswith("#") else line for line in lines).strip()
    return f"From `bench/{path.name}`, written by `{how}`; copied here unchanged.\n\n{body}"


# --------------------------------------------------------------------------- the report

PRODUCT_PATHS: Final = ("pipeline", "workers", "pyproject.toml")


def tree_state() -> tuple[str, str]:
    """(fingerprint of the product code's content, its revision in words).

    The fingerprint hashes the tracked product files as they are on disk, so committing the
    same code does not count as a change; the revision names HEAD and any uncommitted
    changes to those files."""
    import hashlib

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout

    try:
        files = sorted(git("ls-files", "--", *PRODUCT_PATHS).split())
        dirty = git("diff", "HEAD", "--name-only", "--", *PRODUCT_PATHS).split()
        head = git("rev-parse", "--short", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", git_revision()
    digest = hashlib.sha1()
    for name in files:
        digest.update(name.encode())
        try:
            digest.update((REPO / name).read_bytes())
        except OSError:
            digest.update(b"<missing>")
    revision = head + (
        f" plus uncommitted changes to {len(dirty)} product file(s)" if dirty else ""
    )
    return digest.hexdigest()[:12], revision


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


async def _versions(h: Harness, wanted: Sequence[str]) -> str:
    ours = {p: _version(p) for p in ("arq", "aioboto3", "aiobotocore", "redis", "onnxruntime")}
    celery: dict[str, str] = {}
    if any(s in wanted for s in ("io", "fanin")):
        celery = await h.celery_versions()
    parts = [f"{k} {v}" for k, v in ours.items()]
    if celery:
        parts.append("Celery baseline venv: " + ", ".join(f"{k} {v}" for k, v in celery.items()))
    else:
        parts.append(f"celery: {h.celery_problem or 'not used in this run'}")
    return "; ".join(parts)


async def _run_section(name: str, h: Harness) -> SectionOutput:
    """Run one section; each is imported only when it runs (fanin and latency build their arq
    settings from the environment at import)."""
    if name == "io":
        from bench import io_throughput

        return await io_throughput.run(h)
    if name == "callback":
        from bench import callback

        return await callback.run(h)
    if name == "fanin":
        from bench import fanin

        return await fanin.run(h)
    if name == "latency":
        from bench import queue_latency

        return await queue_latency.run(h)
    if name == "sliced":
        from bench import sliced

        return await sliced.run_section(h)
    if name == "e2e":
        from bench import endtoend

        return await endtoend.run(h)
    raise ValueError(name)


async def main_async(args: argparse.Namespace) -> int:
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"bench: unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
        return 2
    order = [s for s in SECTIONS if s in wanted]
    log_dir = Path(tempfile.mkdtemp(prefix="plantpipe-bench-"))
    started = datetime.now(UTC)
    command = "python -m bench" + "".join(f" {a}" for a in sys.argv[1:])
    bodies: dict[str, str] = {}
    headlines: list[str] = []
    failures = 0
    t0 = time.monotonic()
    state0, revision = await asyncio.to_thread(tree_state)
    changed_before: list[str] = []  # sections that started after the product code changed
    async with Harness(quick=args.quick, log_dir=log_dir) as h:
        for name in order:
            if (await asyncio.to_thread(tree_state))[0] != state0:
                changed_before.append(name)
            print(f"bench: {TITLES[name]} …", flush=True)
            t_section = time.monotonic()
            try:
                body, lines = await _run_section(name, h)
            except Exception as exc:  # one section failing must not lose the others
                failures += 1
                body, lines = f"**Not measured: the section failed:** `{exc!r}`"[:4000], []
                print(f"bench: {name} failed: {exc!r}", flush=True)
            took = time.monotonic() - t_section
            bodies[name] = f"{body}\n\n_Section wall time {took:.0f} s._"
            headlines += lines
            print(f"bench: {name} done in {took:.0f} s", flush=True)
        versions = await _versions(h, order)
    total = time.monotonic() - t0
    changed_at_end = (await asyncio.to_thread(tree_state))[0] != state0
    tree_note: list[str] = []
    if changed_before or changed_at_end:
        tree_note = [
            "- **The product code changed while this ran** (other work in the same checkout): "
            + (
                f"first seen at the start of section `{changed_before[0]}`; it and the "
                "sections after it ran on the changed code, the section before it may have "
                "run partly on it"
                if changed_before
                else "during the last section"
            )
            + ". The benchmark process itself keeps the code it imported at start."
        ]
    out = Path(args.out)
    doc = [
        "# plantpipe benchmarks",
        "",
        f"- Command: `{command}` ({'quick' if args.quick else 'full'} run, {total / 60:.1f} min)",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Git revision: {revision} (product code as at the start of the run)",
        *tree_note,
        f"- Machine: {machine()}; {platform.system()} {platform.release()}; "
        f"load average at start {os.getloadavg()[0]:.2f} — the cores are shared with other "
        "work, so absolute numbers move between runs",
        f"- Versions: {versions}",
        "- Services: Redis 127.0.0.1:6379 (db 14 plantpipe, db 13 Celery baseline); S3 is "
        "`pipeline.testing.s3stub` in its own process (in-memory, configurable per-request "
        "latency); workers run with `PLANTPIPE_LOG_LEVEL=WARNING`",
        "- Numbers: median (min–max, n = repetitions) unless stated",
        "",
        "## Summary",
        "",
        *[f"- {line}" for line in headlines],
        "",
    ]
    for name in order:
        doc += [f"## {TITLES[name]}", "", bodies[name], ""]
    for number, (title, path, how) in enumerate(INCLUDED, start=len(SECTIONS) + 1):
        doc += [f"## {number}. {title}", "", included(path, how), ""]
    await asyncio.to_thread(out.write_text, "\n".join(doc).rstrip() + "\n")
    print(f"bench: wrote {out} in {total:.0f} s (logs in {log_dir})", flush=True)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, same shape")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma list of {','.join(SECTIONS)}"
    )
    parser.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"), help="report path")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
