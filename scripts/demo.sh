#!/usr/bin/env bash
# Install weightstore (CPU-only torch first) and run the quick start: save real all-MiniLM-L6-v2
# snapshots for two tasks, restore one bit-exactly, print the storage report.
set -euo pipefail
cd "$(dirname "$0")/.."
WS_EXTRAS=test,bench . scripts/_venv.sh
python scripts/quickstart.py "$@"
