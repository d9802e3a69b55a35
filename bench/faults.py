"""The fault-and-abuse table, one command:

    python -m bench.faults [-k EXPRESSION] [--out PATH] [-- PYTEST_ARGS...]

Runs ``pytest tests/faults`` (about 8 minutes on 2 cores) with ``--faults-report`` pointing
at a JSON file in a temporary folder, then writes ``bench/FAULTS.md`` (or ``--out``) from what
the tests observed (:class:`pipeline.testing.faultreport.FaultReport`). ``-k`` selects tests
as pytest's ``-k`` does; a run with ``-k``, or one that leaves out a test module of the suite,
is partial and writes only to an explicit ``--out`` (``bench/FAULTS.md`` is left as it was).
Exits with pytest's status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from pipeline.testing.faultreport import FaultReport

REPO: Final = Path(__file__).resolve().parents[1]
SUITE: Final = REPO / "tests" / "faults"
DEFAULT_OUT: Final = REPO / "bench" / "FAULTS.md"
PYTEST_ARGS: Final = ("-p", "no:cacheprovider", "-q", "-rfE")


def markdown(report: FaultReport, command: str) -> str:
    """``bench/FAULTS.md``: the table, the tests that did not pass, and the suite's notes."""
    passed = sum(1 for o in report.outcomes.values() if o == "passed")
    failed = {n: o for n, o in report.outcomes.items() if o != "passed"}
    out = [
        "# plantpipe fault-and-abuse suite",
        "",
        f"Produced by `{command}` on {dt.date.today().isoformat()} "
        f"({os.cpu_count()} cores, CPU ONNX Runtime, fixture models, avif_speed 10); "
        f"{report.elapsed_s:.0f} s wall, {passed} of {len(report.outcomes)} tests passed.",
        "Every number below was observed by the tests in `tests/faults/`; nothing is "
        "typed in by hand. This file is written by `python -m bench.faults` (it runs "
        "`pytest tests/faults` and renders what the tests recorded); each run overwrites it.",
        "",
        report.table(),
        "",
    ]
    if failed:
        out += ["## Tests that did not pass", ""]
        out += [f"- `{name}`: {outcome}" for name, outcome in sorted(failed.items())]
        out.append("")
    if report.notes:
        out += ["## Notes", ""]
        out += [f"- {n}" for n in report.notes]
        out.append("")
    return "\n".join(out)


def suite_modules() -> set[str]:
    return {path.name for path in SUITE.glob("test_*.py")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description="Run tests/faults and write its table (bench/FAULTS.md).",
    )
    parser.add_argument("-k", dest="expression", help="pytest -k: run only matching tests")
    parser.add_argument(
        "--out", type=Path, help=f"where to write the table (default {DEFAULT_OUT.name})"
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m bench.faults", *map(shlex.quote, given)])

    with tempfile.TemporaryDirectory(prefix="plantpipe-faults-") as tmp:
        json_path = Path(tmp) / "faults.json"
        pytest = [sys.executable, "-m", "pytest", *PYTEST_ARGS, str(SUITE.relative_to(REPO))]
        pytest += ["--faults-report", str(json_path)]
        if args.expression:
            pytest += ["-k", args.expression]
        pytest += args.pytest_args
        print(f"bench.faults: {shlex.join(pytest)}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.run(pytest, cwd=REPO, check=False).returncode
        if not json_path.is_file():
            print(f"bench.faults: pytest wrote no report (exit {rc}); nothing written")
            return rc or 1
        report = FaultReport.from_json(json_path.read_text())
    missing = sorted(suite_modules() - report.modules_run())
    out = args.out
    if (missing or args.expression) and out is None:
        why = f"no test of {', '.join(missing)} ran" if missing else f"-k {args.expression}"
        print(
            f"bench.faults: partial run ({why}): {DEFAULT_OUT.relative_to(REPO)} left as it "
            "was; pass --out to write the table elsewhere"
        )
        return rc or 1
    out = out or DEFAULT_OUT
    out.write_text(markdown(report, command))
    print(f"bench.faults: wrote {out} ({time.monotonic() - t0:.0f} s, pytest exit {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
