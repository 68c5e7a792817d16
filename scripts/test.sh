#!/usr/bin/env bash
# Set up, then run the default test suite (slow tests: add -m slow; everything: -m "slow or not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
