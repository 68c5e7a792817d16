#!/usr/bin/env bash
# Set up, then build the demo dataset from real media shipped by installed packages.
# Usage: bash scripts/demo.sh [OUTPUT_DIR]   (default: demo-out)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-demo-out}
.venv/bin/hfl build --config pipelines/demo.yaml --output "$out"
echo "open $out/report/index.html"
