#!/usr/bin/env bash
# Create .venv (once) and install the package with its test and sweep (Ray Tune) extras at the pinned versions.
# constraints.txt pins torch==2.13.0: on the project's machines that is the CPU build on local disk.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,sweep]"
