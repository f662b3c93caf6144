#!/usr/bin/env bash
# Set up, then lint and format-check with ruff, then run the whole test suite (unit tests,
# closed-form checks, doctests, smoke runs), spread over PYTEST_WORKERS processes (pytest-xdist; default 2,
# this project's machines' core count; every test runs torch on one thread, tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-2}" "$@"
